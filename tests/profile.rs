//! Profiles end to end: the config file's validation, `backup --profile` writing to a primary and
//! copying to the other repositories, check records, `status --3-2-1` (compliant, then broken in
//! each way a test can break it), an unreachable copy destination and the region policy.

mod util;

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use util::*;

/// Repositories named in a config file, each a [`Repo`] with its own key file.
struct Setup {
    home: tempfile::TempDir,
    config: PathBuf,
    repos: Vec<(String, Repo)>,
    src: PathBuf,
}

/// `(name, medium, site, extra TOML lines)` for each repository; the first is the primary of
/// profile `prod`, which copies to all the others.
fn setup(repos: &[(&str, &str, &str, &str)], profile_extra: &str) -> Setup {
    let home = tempfile::tempdir().unwrap();
    let mut toml = String::new();
    let mut made = Vec::new();
    for (name, medium, site, extra) in repos {
        let r = Repo::init();
        toml.push_str(&format!(
            "[repositories.{name}]\nlocation = {:?}\nmedium = {medium:?}\nsite = {site:?}\nkey_file = {:?}\n{extra}\n",
            s(&r.path),
            s(r.key.as_ref().unwrap()),
        ));
        made.push((name.to_string(), r));
    }
    let copies: Vec<String> = repos[1..].iter().map(|r| format!("{:?}", r.0)).collect();
    toml.push_str(&format!(
        "[profiles.prod]\nprimary = {:?}\ncopies = [{}]\n{profile_extra}\n",
        repos[0].0,
        copies.join(", ")
    ));
    let config = home.path().join("gatevault.toml");
    fs::write(&config, toml).unwrap();
    let src = home.path().join("src");
    write(
        &src.join("kong.yaml"),
        "_format_version: \"3.0\"\nservices:\n- name: a\n  url: http://a\n",
    );
    write(&src.join("routes/r.json"), "{\"paths\": [\"/a\"]}\n");
    Setup {
        home,
        config,
        repos: made,
        src,
    }
}

impl Setup {
    /// `gatevault --config <file> --cache-dir <cache>` with no repository.
    fn gv(&self) -> Command {
        let mut c = gatevault(self.home.path());
        c.arg("--config")
            .arg(&self.config)
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"));
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.gv().args(args).output().unwrap()
    }

    fn json(&self, want: i32, args: &[&str]) -> Value {
        let out = self.gv().arg("--json").args(args).output().unwrap();
        assert_code(&out, want);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe(&out)))
    }

    fn repo(&self, name: &str) -> &Repo {
        &self.repos.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn backup(&self, want: i32) -> Value {
        self.json(want, &["backup", "--profile", "prod", s(&self.src)])
    }

    fn check_all(&self) {
        for (name, _) in &self.repos {
            let loc = format!("config:{name}");
            let out = self.run(&["-r", &loc, "check"]);
            assert_code(&out, code::OK);
            assert!(
                stdout(&out).contains("result recorded"),
                "{}",
                describe(&out)
            );
        }
    }

    fn status(&self, want: i32) -> Value {
        self.json(want, &["status", "--3-2-1"])
    }
}

/// Every problem line of a `status --3-2-1 --json` report.
fn problems(v: &Value) -> String {
    let mut out = Vec::new();
    for p in v["profiles"].as_array().unwrap() {
        out.extend(
            p["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.to_string()),
        );
        for src in p["sources"].as_array().unwrap() {
            for snap in src["snapshots"].as_array().unwrap() {
                out.extend(
                    snap["problems"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_string()),
                );
            }
        }
    }
    out.join("\n")
}

fn newest(v: &Value) -> &Value {
    &v["profiles"][0]["sources"][0]["snapshots"][0]
}

const THREE: &[(&str, &str, &str, &str)] = &[
    ("local", "disk", "onsite", ""),
    ("nas", "disk", "offsite", ""),
    ("vault", "tape/offline", "offsite", ""),
];

#[test]
fn backup_profile_copies_everywhere_and_status_reports_3_2_1() {
    let st = setup(THREE, "");
    let b = st.backup(code::OK);
    let id = b["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(b["profile"], "prod");
    assert_eq!(b["primary"]["repository"], "local");
    assert_eq!(st.repo("local").snapshot_ids(), vec![id.clone()]);
    let copies = b["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{b}");
    for (c, name) in copies.iter().zip(["nas", "vault"]) {
        assert_eq!(c["repository"], name, "{b}");
        assert_eq!(c["status"], "copied", "{b}");
        let target = c["snapshot_id"].as_str().unwrap();
        assert_eq!(st.repo(name).snapshot_ids(), [target.to_string()]);
        // The copy restores to the same files.
        let out = st.repo(name).root().join("restored");
        st.repo(name).restore(target, &out, &[]);
        assert_tree_eq(&st.src, &restored(&out, &st.src));
    }

    // Never checked: the rule is broken, and the report says why.
    let v = st.status(3);
    assert_eq!(v["compliant"], false);
    assert_eq!(newest(&v)["copies"], 3, "{v}");
    assert!(problems(&v).contains("never checked"), "{v}");

    // Checked everywhere: 3 copies, 2 media, 1 offsite.
    st.check_all();
    let v = st.status(code::OK);
    assert_eq!(v["compliant"], true, "{}", problems(&v));
    let n = newest(&v);
    assert_eq!(
        (&n["copies"], &n["media"], &n["offsite"]),
        (&Value::from(3), &Value::from(2), &Value::from(true))
    );
    assert_eq!(n["origin"]["snapshot"], id.as_str());
    for l in n["locations"].as_array().unwrap() {
        assert_eq!(l["check"], "ok", "{l}");
        assert_eq!(l["last_check"]["status"], "Success", "{l}");
    }
    let text = stdout(&st.run(&["status", "--3-2-1"]));
    assert!(
        text.contains("3-2-1 COMPLIANT") && text.contains("3 copies, 2 media, offsite yes"),
        "{text}"
    );

    // A second run copies only the new backup; the older one is already everywhere.
    let b2 = st.backup(code::OK);
    assert!(
        b2["copies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "copied"),
        "{b2}"
    );
    assert_eq!(st.repo("vault").snapshot_ids().len(), 2);
    assert_eq!(
        st.status(code::OK)["profiles"][0]["sources"][0]["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Break it: forget the newest backup's copy in the vault.
    let vault_copy = b2["copies"][1]["snapshot_id"].as_str().unwrap();
    st.repo("vault").run_ok(["forget", vault_copy]);
    let v = st.status(3);
    assert_eq!(newest(&v)["copies"], 2, "{v}");
    assert!(problems(&v).contains("missing from: vault"), "{v}");
    // A check that finds damage breaks it too.
    let nas = st.repo("nas");
    let pack = nas.pack_files()[0].clone();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&pack, bytes).unwrap();
    let out = st.run(&["-r", "config:nas", "check", "--read-data"]);
    assert_code(&out, code::FAILURE);
    assert!(
        stdout(&out).contains("result recorded"),
        "{}",
        describe(&out)
    );
    let v = st.status(3);
    assert!(
        problems(&v).contains("repository nas ended Failed"),
        "{}",
        problems(&v)
    );
    let text = stdout(&st.run(&["status", "--3-2-1"]));
    assert!(text.contains("3-2-1 BROKEN"), "{text}");
}

#[test]
fn the_same_medium_or_no_offsite_copy_breaks_the_rule() {
    let st = setup(
        &[
            ("a", "disk", "onsite", ""),
            ("b", "disk", "onsite", ""),
            ("c", "disk", "onsite", ""),
        ],
        "",
    );
    st.backup(code::OK);
    st.check_all();
    let v = st.status(3);
    let n = newest(&v);
    assert_eq!(
        (&n["copies"], &n["media"], &n["offsite"]),
        (&Value::from(3), &Value::from(1), &Value::from(false))
    );
    let p = problems(&v);
    assert!(
        p.contains("1 medium") && p.contains("no copy is offsite"),
        "{p}"
    );
    // A stale check: with a zero allowance every check is too old.
    let v = st.json(3, &["status", "--3-2-1", "--max-check-age", "0m"]);
    assert!(problems(&v).contains("old, more than"), "{v}");
}

#[test]
fn an_unreachable_copy_makes_the_backup_partial_and_is_reported() {
    let st = setup(THREE, "");
    // The vault is gone (an unmounted disk, a store that does not answer).
    let vault = st.repo("vault").path.clone();
    fs::rename(&vault, vault.with_extension("away")).unwrap();
    let out = st
        .gv()
        .args(["backup", "--profile", "prod", s(&st.src)])
        .output()
        .unwrap();
    assert_code(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains("copy of snapshot") && err.contains("to vault failed"),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains("gatevault copy --from-repo config:local --to-repo config:vault"),
        "{err}"
    );
    // The primary's snapshot and the reachable copy stay.
    assert_eq!(st.repo("local").snapshot_ids().len(), 1);
    assert_eq!(st.repo("nas").snapshot_ids().len(), 1);
    let v = st.json(3, &["backup", "--profile", "prod", s(&st.src)]);
    assert_eq!(v["copies"][1]["status"], "failed", "{v}");
    assert!(
        v["copies"][1]["error"]
            .as_str()
            .unwrap()
            .contains("no repository"),
        "{v}"
    );
    assert_eq!(v["copies"][0]["status"], "copied", "{v}");
    // status names it and does not stop at it.
    st.check_all_but("vault");
    let v = st.status(3);
    let repos = v["profiles"][0]["repositories"].as_array().unwrap();
    assert_eq!(repos[2]["reachable"], false, "{v}");
    assert!(problems(&v).contains("repository vault"), "{v}");
    assert_eq!(newest(&v)["copies"], 2);
    // Back again, a copy catches up, and the rule holds.
    fs::rename(vault.with_extension("away"), &vault).unwrap();
    let b = st.backup(code::OK);
    assert_eq!(b["copies"][1]["status"], "copied");
    st.check_all();
    let v = st.json(code::OK, &["status", "--3-2-1", "--last", "1"]);
    assert_eq!(v["compliant"], true, "{}", problems(&v));
}

impl Setup {
    fn check_all_but(&self, skip: &str) {
        for (name, _) in &self.repos {
            if name != skip {
                assert_code(
                    &self.run(&["-r", &format!("config:{name}"), "check", "-q"]),
                    code::OK,
                );
            }
        }
    }
}

/// Every file below `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = manifest(dir).into_keys().collect();
    out.retain(|k| !k.starts_with("locks"));
    out
}

#[test]
fn a_region_policy_refuses_before_anything_is_written() {
    let st = setup(
        &[
            ("local", "disk", "onsite", "region = \"eu-central-1\""),
            ("nas", "disk", "offsite", "region = \"eu-west-1\""),
            ("us", "object-store", "offsite", "region = \"us-east-1\""),
        ],
        "require_region = \"eu-*\"",
    );
    let before: Vec<Vec<String>> = st.repos.iter().map(|(_, r)| files(&r.path)).collect();
    let out = st
        .gv()
        .args(["backup", "--profile", "prod", s(&st.src)])
        .output()
        .unwrap();
    assert_code(&out, code::FAILURE);
    let err = stderr(&out);
    for want in [
        "repository us",
        "us-east-1",
        "\"eu-*\"",
        "profile prod",
        "no backup was made",
    ] {
        assert!(err.contains(want), "{want}: {}", describe(&out));
    }
    let after: Vec<Vec<String>> = st.repos.iter().map(|(_, r)| files(&r.path)).collect();
    assert_eq!(before, after, "nothing was written to any repository");

    // `-r config:NAME` applies the policies of the profiles that write to it: init is refused
    // and creates nothing.
    let fresh = st.home.path().join("fresh");
    let toml = fs::read_to_string(&st.config).unwrap()
        + &format!(
            "[repositories.fresh]\nlocation = {:?}\nregion = \"ap-south-1\"\nrequire_region = \"eu-*\"\n",
            s(&fresh)
        );
    fs::write(&st.config, toml).unwrap();
    let out = st.run(&[
        "-r",
        "config:fresh",
        "--key-file",
        s(&st.home.path().join("k")),
        "init",
    ]);
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains("ap-south-1"), "{}", describe(&out));
    assert!(!fresh.exists(), "init wrote nothing");

    // --require-region without a config file: a folder has no region unless declared.
    let r = st.repo("local");
    let out = r
        .cmd()
        .args(["--require-region", "eu-*", "backup", s(&st.src)])
        .output()
        .unwrap();
    assert_code(&out, code::FAILURE);
    assert!(
        stderr(&out).contains("region unknown"),
        "{}",
        describe(&out)
    );
    assert_eq!(r.snapshot_ids().len(), 0);
    // Through the config, the declared region matches and the backup goes ahead.
    let out = st.run(&[
        "-r",
        "config:local",
        "--require-region",
        "eu-*",
        "backup",
        "-q",
        s(&st.src),
    ]);
    assert_code(&out, code::OK);
    assert_eq!(r.snapshot_ids().len(), 1);
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("c.toml");
    let run = |toml: &str, args: &[&str]| {
        fs::write(&config, toml).unwrap();
        let out = gatevault(home.path())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert_code(&out, code::FAILURE);
        stderr(&out)
    };
    let status = ["status", "--3-2-1"];
    let err = run(
        "[repositories.a]\nlocation = \"/x\"\nmedim = \"disk\"\n",
        &status,
    );
    assert!(err.contains(s(&config)) && err.contains("medim"), "{err}");
    let err = run(
        "[repositories.a]\nlocation = \"/x\"\nmedium = \"cloud\"\n",
        &status,
    );
    assert!(
        err.contains("cloud") && err.contains("object-store"),
        "{err}"
    );
    let err = run(
        "[repositories.a]\nlocation = \"/x\"\nsite = \"elsewhere\"\n",
        &status,
    );
    assert!(
        err.contains("elsewhere") && err.contains("offsite"),
        "{err}"
    );
    let err = run(
        "[repositories.a]\nlocation = \"/x\"\n[profiles.p]\nprimary = \"a\"\ncopies = [\"b\"]\n",
        &status,
    );
    assert!(
        err.contains("profiles.p.copies") && err.contains("\"b\""),
        "{err}"
    );
    let err = run(
        "[repositories.a]\nlocation = \"/x\"\n",
        &["backup", "--profile", "nope", "."],
    );
    assert!(err.contains("no profile \"nope\""), "{err}");
    let err = run("[repositories.a]\nlocation = \"/x\"\n", &status);
    assert!(err.contains("names no profile"), "{err}");
    let err = run(
        "[repositories.a]\nlocation = \"/x\"\n",
        &["-r", "config:b", "snapshots"],
    );
    assert!(
        err.contains("no repository \"b\"") && err.contains("configured: a"),
        "{err}"
    );
    // A missing file is named too.
    fs::remove_file(&config).unwrap();
    let out = gatevault(home.path())
        .arg("--config")
        .arg(&config)
        .args(status)
        .output()
        .unwrap();
    assert_code(&out, code::FAILURE);
    assert!(
        stderr(&out).contains("cannot read config file"),
        "{}",
        describe(&out)
    );
    // The status report needs its flag.
    let out = gatevault(home.path()).arg("status").output().unwrap();
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains("--3-2-1"), "{}", describe(&out));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let r = Repo::init();
    let dir = r.root().join("etc");
    fs::create_dir_all(&dir).unwrap();
    fs::rename(r.key.as_ref().unwrap(), dir.join("key")).unwrap();
    fs::write(
        dir.join("config.toml"),
        "[repositories.main]\nlocation = \"../repo\"\nkey_file = \"key\"\n",
    )
    .unwrap();
    // Run from another folder, the config given through the environment.
    let out = r
        .bare()
        .current_dir(r.root())
        .env("GATEVAULT_CONFIG", dir.join("config.toml"))
        .args([
            "--cache-dir",
            s(&r.cache),
            "-r",
            "config:main",
            "--json",
            "snapshots",
        ])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn check_records_its_result_unless_the_key_may_not_write() {
    let r = Repo::init();
    let src = r.root().join("src");
    write(&src.join("f"), "x\n");
    r.backup(&[&src], &[]);
    let audit_before = r.objects("audit").len();
    let j = r.run_json(["check", "--read-data"]);
    assert_eq!(j["status"], "Success");
    let id = j["record"].as_str().unwrap().to_string();
    assert_eq!(r.objects("records").len(), 1);
    assert!(r.path.join("records").join(&id).is_file());
    // The check is a write: its audit entry names the record it added.
    assert_eq!(r.objects("audit").len(), audit_before + 1);
    let entries: Value = r.run_json(["audit"]);
    let last = entries.as_array().unwrap().last().unwrap();
    assert_eq!(last["command"], "check");
    assert_eq!(last["objects"]["record"]["added"][0], id.as_str(), "{last}");
    // --no-record writes nothing at all.
    let j = r.run_json(["check", "--no-record"]);
    assert!(j["record"].is_null(), "{j}");
    assert_eq!(r.objects("records").len(), 1);
    assert_eq!(r.objects("audit").len(), audit_before + 1);
    // A restore key checks, and says the result was not recorded.
    let restore = r.add_key("restore");
    let records = r.objects("records").len();
    let out = r.cmd_with_key(&restore).args(["check"]).output().unwrap();
    assert_code(&out, code::OK);
    assert!(stderr(&out).contains("not recorded"), "{}", describe(&out));
    assert_eq!(r.objects("records").len(), records);
}

// ------------------------------------------------------------------------------ real stores

/// A config file naming a local folder, an S3 bucket (moto) and an Azure container (Azurite),
/// each initialised through `-r config:NAME`.
struct RemoteSetup {
    home: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
    src: PathBuf,
}

impl RemoteSetup {
    fn gv(&self) -> Command {
        let mut c = gatevault(self.home.path());
        c.arg("--config")
            .arg(&self.config)
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    fn json(&self, want: i32, args: &[&str]) -> Value {
        let out = self.gv().arg("--json").args(args).output().unwrap();
        assert_code(&out, want);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe(&out)))
    }
}

fn toml_table(opts: &[String]) -> String {
    let kv: Vec<String> = opts
        .iter()
        .map(|o| {
            let (k, v) = o.split_once('=').unwrap();
            format!("{k:?} = {v:?}")
        })
        .collect();
    format!("{{ {} }}", kv.join(", "))
}

fn remote_setup(s3: &RemoteStore, azure: &RemoteStore, s3_region: &str) -> RemoteSetup {
    let home = tempfile::tempdir().unwrap();
    let root = home.path();
    let (sb, ab) = (s3.new_bucket(), azure.new_bucket());
    let toml = format!(
        "[repositories.local]\nlocation = \"local-repo\"\nmedium = \"disk\"\nsite = \"onsite\"\nregion = \"eu-central-1\"\nkey_file = \"local.key\"\n\n\
         [repositories.s3]\nlocation = {:?}\nsite = \"offsite\"\nkey_file = \"s3.key\"\noptions = {}\n\n\
         [repositories.azure]\nlocation = {:?}\nsite = \"offsite\"\nregion = \"westeurope\"\nkey_file = \"azure.key\"\noptions = {}\n\n\
         [profiles.prod]\nprimary = \"local\"\ncopies = [\"s3\", \"azure\"]\n",
        s3.location(&sb, "gv"),
        toml_table(&[format!("s3.region={s3_region}")]),
        azure.location(&ab, "gv"),
        toml_table(&azure.options()),
    );
    let config = root.join("config.toml");
    fs::write(&config, toml).unwrap();
    let src = root.join("src");
    write(
        &src.join("kong.yaml"),
        "_format_version: \"3.0\"\nservices: []\n",
    );
    let mut env = s3.env();
    env.extend(azure.env());
    let st = RemoteSetup {
        home,
        config,
        env,
        src,
    };
    for name in ["local", "s3", "azure"] {
        let out = st
            .gv()
            .args(["-r", &format!("config:{name}"), "init", "-q"])
            .output()
            .unwrap();
        assert_code(&out, code::OK);
    }
    st
}

#[test]
fn backup_profile_to_disk_s3_and_azure_is_3_2_1_compliant() {
    let (Some(s3), Some(azure)) = (RemoteStore::s3(), RemoteStore::azure()) else {
        return;
    };
    let st = remote_setup(&s3, &azure, "eu-central-1");
    let b = st.json(code::OK, &["backup", "--profile", "prod", s(&st.src)]);
    for c in b["copies"].as_array().unwrap() {
        assert_eq!(c["status"], "copied", "{b}");
    }
    for name in ["local", "s3", "azure"] {
        let out = st
            .gv()
            .args(["-r", &format!("config:{name}"), "check", "--read-data"])
            .output()
            .unwrap();
        assert_code(&out, code::OK);
    }
    let v = st.json(code::OK, &["status", "--3-2-1"]);
    let n = &v["profiles"][0]["sources"][0]["snapshots"][0];
    assert_eq!(
        (&n["copies"], &n["media"], &n["offsite"]),
        (&Value::from(3), &Value::from(2), &Value::from(true)),
        "{v}"
    );
    let out = st.gv().args(["status", "--3-2-1"]).output().unwrap();
    assert_code(&out, code::OK);
    println!("{}", stdout(&out));
    // The S3 copy disappears: the rule is broken and the report says where.
    let copy = b["copies"][0]["snapshot_id"].as_str().unwrap();
    let out = st
        .gv()
        .args(["-r", "config:s3", "forget", copy])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    let v = st.json(3, &["status", "--3-2-1"]);
    assert!(problems(&v).contains("missing from: s3"), "{v}");
}

#[test]
fn an_s3_bucket_outside_the_required_region_receives_nothing() {
    let Some(s3) = RemoteStore::s3() else { return };
    let bucket = s3.new_bucket();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[repositories.local]\nlocation = \"repo\"\nregion = \"eu-west-1\"\nkey_file = \"k\"\n\
             [repositories.s3]\nlocation = {:?}\nsite = \"offsite\"\nkey_file = \"k\"\noptions = {{ \"s3.region\" = \"us-east-1\" }}\n\
             [profiles.prod]\nprimary = \"local\"\ncopies = [\"s3\"]\nrequire_region = \"eu-*\"\n",
            s3.location(&bucket, "gv")
        ),
    )
    .unwrap();
    let src = home.path().join("src");
    write(&src.join("f.json"), "{}\n");
    let gv = || {
        let mut c = gatevault(home.path());
        c.arg("--config")
            .arg(&config)
            .arg("--cache-dir")
            .arg(home.path().join("cache"))
            .envs(s3.env());
        c
    };
    assert_code(
        &gv()
            .args(["-r", "config:local", "init", "-q"])
            .output()
            .unwrap(),
        code::OK,
    );
    // init into the bucket is refused, and so is a backup copying to it.
    let out = gv().args(["-r", "config:s3", "init"]).output().unwrap();
    assert_code(&out, code::FAILURE);
    assert!(
        stderr(&out).contains("us-east-1") && stderr(&out).contains("eu-*"),
        "{}",
        describe(&out)
    );
    let out = gv()
        .args(["backup", "--profile", "prod", s(&src)])
        .output()
        .unwrap();
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains("repository s3"), "{}", describe(&out));
    // Nothing in the bucket, nothing in the primary.
    let opts =
        gatevault::backend::BackendOptions::parse(&["s3.region=us-east-1".to_string()]).unwrap();
    let b = gatevault::backend::open(&s3.location(&bucket, ""), &opts).unwrap();
    for t in gatevault::backend::FileType::ALL {
        assert_eq!(b.list(t).unwrap(), vec![], "{t} objects in the bucket");
    }
    assert!(!b.exists(gatevault::backend::FileType::Config, "").unwrap());
    let out = gv()
        .args(["-r", "config:local", "--json", "snapshots"])
        .output()
        .unwrap();
    assert_code(&out, code::OK);
    assert_eq!(stdout(&out).trim(), "[]");
}
