//! `gatevault probe` driven through the real binary against a real nginx on loopback: an API-key
//! protected location, `limit_req` zones answering 429, a CORS preflight and JSON bodies.
//!
//! Each test that needs nginx starts its own (rate limiters keep state), and skips with a message
//! when nginx is missing, unless `GATEVAULT_REQUIRE_SERVICES=1`, which makes it fail instead.

mod util;

use std::path::{Path, PathBuf};

use serde_json::Value;
use util::{assert_code, code, describe, gatevault, s, stderr, stdout, Service};

/// An nginx serving the shop API of `examples/probes.toml` on a free loopback port.
struct Gateway {
    svc: Service,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn url(&self) -> String {
        self.svc.url()
    }

    /// Writes a probe file into the gateway's folder.
    fn probe_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Starts nginx, or `None` when it is not installed (and services are not required).
fn nginx() -> Option<Gateway> {
    if !util::have("nginx") {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("gatevault-probe-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let port = util::free_port();
    std::fs::create_dir_all(root.join("html")).unwrap();
    std::fs::write(root.join("html/quotes"), "{\"quote\":\"ok\"}\n").unwrap();
    std::fs::write(root.join("html/strict"), "ok\n").unwrap();
    let p = s(root);
    // `return` answers in the rewrite phase, before limit_req: the limited locations serve files.
    let conf = format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
error_log {p}/error.log;
pid {p}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {p}/tmp-body;
  proxy_temp_path {p}/tmp-proxy;
  fastcgi_temp_path {p}/tmp-fastcgi;
  uwsgi_temp_path {p}/tmp-uwsgi;
  scgi_temp_path {p}/tmp-scgi;
  # 1 request a minute, burst 2, no delay: requests 1 to 3 pass, the 4th gets 429.
  limit_req_zone $binary_remote_addr zone=quotes:1m rate=1r/m;
  # No burst: request 2 gets 429.
  limit_req_zone $binary_remote_addr zone=strict:1m rate=1r/m;
  limit_req_status 429;
  map $http_origin $cors_origin {{ "https://shop.example.com" $http_origin; default ""; }}
  server {{
    listen 127.0.0.1:{port};
    root {p}/html;
    location = /health {{
      default_type application/json;
      return 200 '{{"status":"ok","checks":{{"db":"up"}},"version":3}}\n';
    }}
    location = /orders {{
      default_type application/json;
      if ($http_apikey != "secret") {{ return 401 '{{"message":"No API key found in request"}}\n'; }}
      return 200 '{{"orders":[{{"id":42,"item":"teapot"}}]}}\n';
    }}
    location = /cart {{
      if ($request_method = OPTIONS) {{
        add_header Access-Control-Allow-Origin $cors_origin;
        add_header Access-Control-Allow-Methods "GET, POST, OPTIONS";
        add_header Access-Control-Max-Age 600;
        return 204;
      }}
      default_type application/json;
      return 200 '{{"items":[]}}\n';
    }}
    location = /quotes {{ limit_req zone=quotes burst=2 nodelay; default_type application/json; }}
    location = /strict {{ limit_req zone=strict nodelay; default_type text/plain; }}
  }}
}}
"#
    );
    let conf_path = root.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut c = std::process::Command::new(util::find_tool("nginx").expect("nginx"));
    c.arg("-p")
        .arg(root)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(root.join("error.log"));
    Some(Gateway {
        svc: Service::start(c, port),
        dir,
    })
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/probes.toml")
}

/// `gatevault [--json] probe --file F --base-url URL`, run in a scratch home.
fn probe(home: &Path, json: bool, file: &Path, base_url: &str) -> std::process::Output {
    let mut c = gatevault(home);
    if json {
        c.arg("--json");
    }
    c.args(["probe", "--file", s(file), "--base-url", base_url])
        .output()
        .expect("run gatevault")
}

/// Runs `probe --json`, expects exit code `want`, and parses the report.
#[track_caller]
fn probe_json(home: &Path, file: &Path, base_url: &str, want: i32) -> Value {
    let out = probe(home, true, file, base_url);
    assert_code(&out, want);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", describe(&out)))
}

fn results(report: &Value) -> &Vec<Value> {
    report["results"].as_array().expect("results array")
}

#[test]
fn the_example_probes_pass_against_a_gateway_that_behaves() {
    let Some(gw) = nginx() else { return };
    let report = probe_json(gw.dir.path(), &example(), &gw.url(), code::OK);
    assert_eq!(report["base_url"], gw.url().as_str());
    let names: Vec<&str> = results(&report)
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "health is up",
            "orders refuse a request without a key",
            "orders answer with the key",
            "cart preflight from the shop",
            "cart preflight from elsewhere gets no grant",
            "quotes are rate limited",
        ]
    );
    let mut statuses = vec![];
    for r in results(&report) {
        assert_eq!(r["passed"], true, "{r}");
        statuses.push(r["status"].as_u64().unwrap());
    }
    assert_eq!(statuses, [200, 401, 200, 204, 204, 429]);
    let limited = &results(&report)[5];
    assert_eq!(limited["requests"], 4, "{limited}");
    assert_eq!(
        limited["detail"],
        "GET /quotes -> 429 at request 4 (after 200, 200, 200)"
    );
    assert!(results(&report)[..5].iter().all(|r| r["requests"] == 1));
    assert_eq!(results(&report)[1]["detail"], "GET /orders -> 401");
}

const FAILING: &str = r#"
[defaults]
headers = { apikey = "secret" }

[[probe]]
name = "still fine"
path = "/health"
expect.json = { "/version" = 3 }

[[probe]]
name = "status"
path = "/orders"
omit_headers = ["apikey"]
expect.status = [200, 204]

[[probe]]
name = "header equals"
method = "OPTIONS"
path = "/cart"
headers = { Origin = "https://elsewhere.example" }
expect.headers = { "Access-Control-Allow-Origin" = "https://elsewhere.example" }

[[probe]]
name = "header contains"
method = "OPTIONS"
path = "/cart"
headers = { Origin = "https://shop.example.com" }
expect.headers = { "Access-Control-Allow-Methods" = { contains = "DELETE" } }

[[probe]]
name = "header present"
path = "/health"
expect.headers = { "X-Request-Id" = { present = true } }

[[probe]]
name = "header absent"
path = "/health"
expect.headers = { "Content-Type" = { absent = true } }

[[probe]]
name = "body contains"
path = "/orders"
expect.body_contains = "kettle"

[[probe]]
name = "json value"
path = "/health"
expect.json = { "/status" = "down", "/checks/cache" = "up" }

[[probe]]
name = "json body"
method = "OPTIONS"
path = "/cart"
expect.json = { "/items" = [] }

[[probe]]
name = "limit never shows"
path = "/quotes"
rate_limit = { requests = 2, window_secs = 60 }

[[probe]]
name = "limit shows too early"
path = "/strict"
rate_limit = { requests = 3, window_secs = 60, allowed = 2 }
"#;

#[test]
fn each_failed_expectation_says_what_was_expected_and_what_was_seen() {
    let Some(gw) = nginx() else { return };
    let file = gw.probe_file("failing.toml", FAILING);
    let report = probe_json(gw.dir.path(), &file, &gw.url(), code::FAILURE);
    let want: &[(&str, bool, &[&str])] = &[
        ("still fine", true, &["GET /health -> 200"]),
        (
            "status",
            false,
            &["GET /orders -> 401: status: expected one of 200, 204, got 401"],
        ),
        (
            "header equals",
            false,
            &["header Access-Control-Allow-Origin: expected \"https://elsewhere.example\", got no such header"],
        ),
        (
            "header contains",
            false,
            &["header Access-Control-Allow-Methods: expected a value containing \"DELETE\", got \"GET, POST, OPTIONS\""],
        ),
        (
            "header present",
            false,
            &["header X-Request-Id: expected the header, got no such header"],
        ),
        (
            "header absent",
            false,
            &["header Content-Type: expected no such header, got \"application/json\""],
        ),
        (
            "body contains",
            false,
            &["body: expected it to contain \"kettle\", got \"{\\\"orders\\\":[{\\\"id\\\":42,\\\"item\\\":\\\"teapot\\\"}]}\\n\""],
        ),
        (
            "json value",
            false,
            &[
                "JSON /status: expected \"down\", got \"ok\"",
                "JSON /checks/cache: expected \"up\", got no value there",
            ],
        ),
        (
            "json body",
            false,
            &["OPTIONS /cart -> 204: JSON /items: expected a JSON body, got an empty body"],
        ),
        (
            "limit never shows",
            false,
            &["GET /quotes: expected 429 by request 2, got 200, 200"],
        ),
        (
            "limit shows too early",
            false,
            &["GET /strict -> 429 at request 2 (after 200): expected the first 2 requests to be let through, got 429 at request 2"],
        ),
    ];
    let got = results(&report);
    assert_eq!(got.len(), want.len(), "{report}");
    for (r, (name, passed, parts)) in got.iter().zip(want) {
        assert_eq!(r["name"], *name);
        assert_eq!(r["passed"], *passed, "{r}");
        let detail = r["detail"].as_str().unwrap();
        for part in *parts {
            assert!(
                detail.contains(part),
                "{name}: {detail}\nshould contain\n{part}"
            );
        }
    }
    assert_eq!(got[9]["requests"], 2);
    assert_eq!(got[10]["requests"], 2);
}

#[test]
fn human_output_has_one_line_per_probe_and_a_summary() {
    let Some(gw) = nginx() else { return };
    let file = gw.probe_file(
        "mixed.toml",
        "[[probe]]\nname = \"health\"\npath = \"/health\"\n\n[[probe]]\nname = \"orders\"\npath = \"/orders\"\n",
    );
    let out = probe(gw.dir.path(), false, &file, &gw.url());
    assert_code(&out, code::FAILURE);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("pass  health: GET /health -> 200 ("),
        "{text}"
    );
    assert!(
        lines[1].starts_with(
            "FAIL  orders: GET /orders -> 401: status: expected a 2xx status, got 401 ("
        ),
        "{text}"
    );
    assert_eq!(
        lines[2],
        format!("1 of 2 probes passed against {}", gw.url())
    );
    // --quiet keeps the failures and the verdict.
    let mut c = gatevault(gw.dir.path());
    let out = c
        .args(["-q", "probe", "--file", s(&file), "--base-url", &gw.url()])
        .output()
        .unwrap();
    assert_code(&out, code::FAILURE);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("FAIL  orders: "), "{text}");
}

#[test]
fn a_gateway_that_is_not_listening_fails_every_probe_without_a_crash() {
    let home = tempfile::tempdir().unwrap();
    let port = util::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let report = probe_json(home.path(), &example(), &url, code::FAILURE);
    assert_eq!(results(&report).len(), 6);
    for r in results(&report) {
        assert_eq!(r["passed"], false, "{r}");
        assert_eq!(r["requests"], 1, "{r}");
        assert!(r.get("status").is_none(), "{r}");
        let detail = r["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!(
                "cannot connect to 127.0.0.1:{port}: is the gateway listening?"
            )),
            "{detail}"
        );
    }
    let out = probe(home.path(), false, &example(), &url);
    assert_code(&out, code::FAILURE);
    assert!(
        stdout(&out).ends_with(&format!("0 of 6 probes passed against {url}\n")),
        "{}",
        describe(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", describe(&out));
}

#[test]
fn malformed_probe_files_are_errors_naming_the_file_the_probe_and_the_field() {
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", util::free_port());
    let cases = [
        (
            "typo.toml",
            "[[probe]]\nname = \"a\"\npath = \"/\"\n\n[[probe]]\nname = \"orders\"\npath = \"/orders\"\n[probe.expect]\nstauts = 200\n",
            &["typo.toml", "line 9", "probe 2 (\"orders\")", "unknown field `stauts`"][..],
        ),
        (
            "range.toml",
            "[[probe]]\nname = \"limited\"\npath = \"/q\"\nrate_limit = { requests = 3, window_secs = 60, status = 42 }\n",
            &["range.toml", "probe 1 (\"limited\")", "rate_limit.status: 42 is not an HTTP status"][..],
        ),
        (
            "syntax.toml",
            "[[probe]]\nname = \"a\npath = \"/\"\n",
            &["syntax.toml", "line 2"][..],
        ),
        (
            "empty.toml",
            "# nothing yet\n",
            &["empty.toml", "no probes"][..],
        ),
    ];
    for (name, text, parts) in cases {
        let file = home.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = probe(home.path(), false, &file, &url);
        assert_code(&out, code::FAILURE);
        assert!(stdout(&out).is_empty(), "{}", describe(&out));
        let err = stderr(&out);
        for part in parts {
            assert!(err.contains(part), "{name}: {err}\nshould contain {part}");
        }
    }
    let missing = home.path().join("absent.toml");
    let out = probe(home.path(), false, &missing, &url);
    assert_code(&out, code::FAILURE);
    assert!(stderr(&out).contains("absent.toml"), "{}", describe(&out));
    // A base URL without a scheme is refused before any request.
    let out = probe(home.path(), false, &example(), "127.0.0.1:8080");
    assert_code(&out, code::FAILURE);
    assert!(
        stderr(&out).contains("--base-url") && stderr(&out).contains("http://"),
        "{}",
        describe(&out)
    );
}
