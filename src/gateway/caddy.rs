//! Caddy: the JSON config from the admin API (`GET /config/`) or from a config file.
//!
//! Layout (see `docs/gateways.md`):
//! - `caddy/apps/http/servers/<server>.json`: a server without its routes, plus `route_keys`, the
//!   keys of its routes in order (Caddy tries routes in order, so the order is configuration);
//! - `caddy/apps/http/servers/<server>/routes/<key>.json`: one route each, keyed by its `@id`, or
//!   else by its first host and path matchers, with `-2`, `-3` ... on collision;
//! - `caddy/apps/tls/certificates/<key>.json`: one `load_pem` certificate each (private key marked
//!   secret), keyed by its tags, or else by a hash of the certificate;
//! - `caddy/apps/<app>.json`: every app without the parts split out above (`http` without
//!   `servers`, `tls` without `certificates.load_pem`);
//! - `caddy/<field>.json` for the other top-level fields (`admin`, `logging`, `storage`);
//! - `raw/caddy.json`: the config exactly as Caddy gave it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use super::canonical::{field_pointers, file_name};
use super::{Capture, Entity, GatewayOptions, Source};
use crate::error::{Error, Result};

/// The admin endpoint Caddy listens on unless configured otherwise.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:2019";

/// Largest config accepted from the admin API.
const MAX_CONFIG_BYTES: u64 = 256 << 20;

/// Fields whose values are secrets wherever they appear (basic-auth hashes, DNS provider tokens,
/// CA private keys, ACME external account binding keys).
const SECRET_FIELDS: &[&str] = &[
    "password",
    "secret",
    "client_secret",
    "api_token",
    "auth_token",
    "token",
    "private_key",
    "mac_key",
    "shared_key",
];

/// Captures Caddy from its admin API, or from the config file `opts.file`.
///
/// # Errors
/// [`Error::Gateway`] when the admin API cannot be reached, refuses the request or the config is not
/// JSON; [`Error::Io`] when the file cannot be read.
pub fn capture(opts: &GatewayOptions) -> Result<Capture> {
    let (source, body) = match &opts.file {
        Some(path) => {
            let source = Source::new("caddy", &format!("file:{}", path.display()));
            let body = std::fs::read(path)
                .map_err(|e| Error::io(format!("reading Caddy config {}", path.display()), e))?;
            (source, body)
        }
        None => fetch(opts.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT))?,
    };
    let entities = entities(&source, &body)?;
    let mut raw = BTreeMap::new();
    raw.insert("caddy.json".to_string(), body);
    Ok(Capture {
        source,
        raw,
        entities,
    })
}

/// GETs `{endpoint}/config/`: the source and the body.
fn fetch(endpoint: &str) -> Result<(Source, Vec<u8>)> {
    let endpoint = super::http::base_url(endpoint);
    let mut source = Source::new("caddy", &endpoint);
    if !endpoint.starts_with("http://") {
        return Err(Error::gateway(
            source.describe(),
            "only plain http:// admin endpoints are supported (Caddy's default, on loopback): give one with --endpoint, or save the config with `curl .../config/ > caddy.json` and pass --file caddy.json",
        ));
    }
    let url = format!("{endpoint}/config/");
    let resp = http_get(&url).map_err(|e| {
        Error::gateway(
            source.describe(),
            format!("cannot reach the admin API ({e}): is Caddy running with its admin API at {endpoint}? Give the right address with --endpoint"),
        )
    })?;
    let body = config_body(&mut source, &url, resp)?;
    Ok((source, body))
}

/// The config in the admin API's answer to `GET url`: the body of a 200 answer (its `Server` header
/// becomes the source's version); any other status is an error with a hint.
///
/// # Errors
/// [`Error::Gateway`] naming the status and the answer's text.
pub(crate) fn config_body(source: &mut Source, url: &str, resp: Response) -> Result<Vec<u8>> {
    if resp.status != 200 {
        let hint = match resp.status {
            401 | 403 => "the admin API refused access: check its `admin.origins` and identity settings, or run gatevault where the admin API is reachable",
            404 => "no Caddy admin API answers there: check --endpoint",
            _ => "check Caddy's log and try again",
        };
        return Err(Error::gateway(
            source.describe(),
            format!(
                "GET {url} answered HTTP {} {}: {hint}",
                resp.status,
                String::from_utf8_lossy(&resp.body).trim()
            ),
        ));
    }
    source.version = resp.header("server").map(str::to_string);
    Ok(resp.body)
}

/// A response to [`request`].
pub(crate) struct Response {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// GETs `url` (`http://host:port/path`) with HTTP/1.0: see [`request`].
fn http_get(url: &str) -> std::io::Result<Response> {
    request("GET", url, &[], &[])
}

/// Sends `method` to `url` (`http://host:port/path`) with HTTP/1.0, these headers and this body.
///
/// HTTP/1.0 on purpose: Caddy sends the config's ETag as a trailer of a chunked HTTP/1.1
/// response, which common clients fail to decode; an HTTP/1.0 response is the plain body, ended by
/// the connection closing (and checked against `Content-Length` where given). Admin APIs listen on
/// loopback without TLS, so this is all the client the capture needs.
pub(crate) fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    use std::io::{Error as IoError, ErrorKind, Write};
    let bad = |m: String| IoError::new(ErrorKind::InvalidData, m);
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad(format!("{url} is not an http:// URL")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut last = IoError::new(ErrorKind::NotFound, format!("{authority} has no address"));
    let mut stream = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut s = stream.ok_or(last)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\nUser-Agent: gatevault\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut buf = vec![];
    s.take(MAX_CONFIG_BYTES).read_to_end(&mut buf)?;
    parse_response(buf)
}

/// Reads an HTTP/1.0 answer: `buf` is everything the server sent before it closed the connection.
/// The status line's code, the headers, and the body after the blank line, which must be as long as
/// a `Content-Length` header says.
///
/// # Errors
/// `InvalidData` when there is no status line with a code or no end of the headers, or the body
/// is shorter or longer than its `Content-Length`.
pub(crate) fn parse_response(buf: Vec<u8>) -> std::io::Result<Response> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("the answer is not HTTP".into()))?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("the answer is not HTTP".into()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let resp = Response {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    };
    if let Some(n) = resp
        .header("content-length")
        .and_then(|n| n.parse::<usize>().ok())
    {
        if resp.body.len() != n {
            return Err(bad(format!(
                "the answer's body has {} bytes where its Content-Length says {n}",
                resp.body.len()
            )));
        }
    }
    Ok(resp)
}

/// The entities of a Caddy JSON config, `body` as the admin API or the file gave it.
///
/// # Errors
/// [`Error::Gateway`] when it is not JSON, or not shaped like a Caddy config.
pub fn entities(source: &Source, body: &[u8]) -> Result<Vec<Entity>> {
    let config: Value = serde_json::from_slice(body).map_err(|e| {
        Error::gateway(
            source.describe(),
            format!("the config is not JSON ({e}): check that this is Caddy's JSON config (a Caddyfile must be adapted first: `caddy adapt`)"),
        )
    })?;
    split(source, &config)
}

/// The folder of the route documents of server `server`.
pub fn routes_dir(server: &str) -> String {
    format!("caddy/apps/http/servers/{}/routes", file_name(server))
}

/// Splits a Caddy config into entities.
fn split(source: &Source, config: &Value) -> Result<Vec<Entity>> {
    let top = match config {
        Value::Null => return Ok(vec![]),
        Value::Object(m) => m,
        _ => {
            return Err(Error::gateway(
                source.describe(),
                "the config is not a JSON object: check that this is Caddy's JSON config",
            ))
        }
    };
    let mut out = vec![];
    for (field, v) in top {
        if field == "apps" {
            let Value::Object(apps) = v else {
                return Err(Error::gateway(
                    source.describe(),
                    "`apps` is not an object: check the config with `caddy validate`",
                ));
            };
            for (app, v) in apps {
                let mut v = v.clone();
                match app.as_str() {
                    "http" => out.extend(http_servers(source, &mut v)?),
                    "tls" => out.extend(tls_certificates(&mut v)),
                    _ => {}
                }
                out.push(marked(Entity::new("caddy/apps", "app", app, v)));
            }
        } else {
            out.push(marked(Entity::new("caddy", field, field, v.clone())));
        }
    }
    Ok(out)
}

/// Marks the well-known secret fields (and basic-auth user names as personal).
fn marked(mut e: Entity) -> Entity {
    e.secrets.extend(field_pointers(&e.value, SECRET_FIELDS));
    e.personal.extend(field_pointers(&e.value, &["username"]));
    e
}

/// Takes the servers out of the http app: a document per server and per route.
fn http_servers(source: &Source, http: &mut Value) -> Result<Vec<Entity>> {
    // Only a map of servers is split out; anything else stays in the app as it is.
    let Some(m) = http
        .as_object_mut()
        .filter(|m| m.get("servers").is_some_and(Value::is_object))
    else {
        return Ok(vec![]);
    };
    let Some(Value::Object(servers)) = m.remove("servers") else {
        return Ok(vec![]);
    };
    let mut out = vec![];
    for (name, mut server) in servers {
        let routes = match server.as_object_mut().and_then(|m| m.remove("routes")) {
            Some(Value::Array(r)) => r,
            None | Some(Value::Null) => vec![],
            Some(_) => {
                return Err(Error::gateway(
                    source.describe(),
                    format!("server {name:?}: `routes` is not a list: check the config with `caddy validate`"),
                ))
            }
        };
        let keys = route_keys(&routes);
        let dir = routes_dir(&name);
        for (key, route) in keys.iter().zip(routes) {
            let mut e = marked(Entity::new(&dir, "route", key, route));
            e.key = format!("{name}/{key}");
            out.push(e);
        }
        if let Value::Object(m) = &mut server {
            m.insert(
                "route_keys".into(),
                Value::Array(keys.into_iter().map(Value::String).collect()),
            );
        }
        out.push(marked(Entity::new(
            "caddy/apps/http/servers",
            "server",
            &name,
            server,
        )));
    }
    Ok(out)
}

/// Keys for routes in order: the `@id` where there is one, else the first host and path matched
/// (`route` when none), made unique by a numeric suffix. Ids are reserved first so that a derived
/// key never takes an id's name.
pub fn route_keys(routes: &[Value]) -> Vec<String> {
    let mut used: BTreeSet<String> = routes
        .iter()
        .filter_map(|r| r.get("@id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut out = vec![];
    for r in routes {
        if let Some(id) = r.get("@id").and_then(Value::as_str) {
            out.push(id.to_string());
            continue;
        }
        let base = derived_key(r);
        let mut key = base.clone();
        let mut n = 2;
        while used.contains(&key) {
            key = format!("{base}-{n}");
            n += 1;
        }
        used.insert(key.clone());
        out.push(key);
    }
    out
}

/// `host` + `path` of a route's first matcher set, e.g. `api.example.com/orders/*`.
fn derived_key(route: &Value) -> String {
    let first = |m: &Value, field: &str| {
        m.get(field)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let Some(m) = route.pointer("/match/0") else {
        return "route".into();
    };
    match (first(m, "host"), first(m, "path")) {
        (Some(h), Some(p)) => format!("{h}{p}"),
        (Some(h), None) => h,
        (None, Some(p)) => p,
        (None, None) => "route".into(),
    }
}

/// Takes the `load_pem` certificates out of the tls app: a document each, private key secret.
fn tls_certificates(tls: &mut Value) -> Vec<Entity> {
    let Some(certs) = tls.get_mut("certificates").and_then(Value::as_object_mut) else {
        return vec![];
    };
    // Only a list of certificates is split out; anything else stays in the app as it is.
    if !certs.get("load_pem").is_some_and(Value::is_array) {
        return vec![];
    }
    let Some(Value::Array(pems)) = certs.remove("load_pem") else {
        return vec![];
    };
    if certs.is_empty() {
        if let Some(m) = tls.as_object_mut() {
            m.remove("certificates");
        }
    }
    let mut used = BTreeSet::new();
    let mut out = vec![];
    for pem in pems {
        let tags: Vec<&str> = pem
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let cert = pem.get("certificate").and_then(Value::as_str).unwrap_or("");
        let base = if tags.is_empty() {
            let h = blake3::hash(cert.as_bytes()).to_hex();
            format!("sha-{}", &h.as_str()[..16])
        } else {
            tags.join(",")
        };
        let mut key = base.clone();
        let mut n = 2;
        while !used.insert(key.clone()) {
            key = format!("{base}-{n}");
            n += 1;
        }
        let e =
            Entity::new("caddy/apps/tls/certificates", "certificate", &key, pem).secret(&["/key"]);
        out.push(marked(e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn route_keys_prefer_ids_and_stay_unique() {
        let routes = vec![
            json!({"match": [{"path": ["/a"]}]}),
            json!({"@id": "/a"}),
            json!({"match": [{"host": ["x.example"], "path": ["/a"]}]}),
            json!({"match": [{"path": ["/a"]}]}),
            json!({"handle": []}),
        ];
        assert_eq!(
            route_keys(&routes),
            vec!["/a-2", "/a", "x.example/a", "/a-3", "route"]
        );
    }

    #[test]
    fn servers_and_certificates_of_another_shape_stay_in_their_app() {
        let s = Source::new("caddy", "file:x");
        let c = json!({"apps": {
            "http": {"servers": ["not", "a", "map"]},
            "tls": {"certificates": {"load_pem": "not a list"}}
        }});
        let es = split(&s, &c).unwrap();
        let app = |k: &str| {
            &es.iter()
                .find(|e| e.kind == "app" && e.key == k)
                .unwrap()
                .value
        };
        assert_eq!(app("http"), &c["apps"]["http"]);
        assert_eq!(app("tls"), &c["apps"]["tls"]);
    }

    #[test]
    fn null_config_has_no_entities() {
        let s = Source::new("caddy", "file:x");
        assert!(split(&s, &Value::Null).unwrap().is_empty());
        assert!(matches!(split(&s, &json!([1])), Err(Error::Gateway { .. })));
    }

    #[test]
    fn pem_keys_are_secret_and_keyed_by_tags() {
        let mut tls = json!({"certificates": {"load_pem": [
            {"certificate": "C", "key": "K", "tags": ["api"]},
            {"certificate": "D", "key": "L"}
        ]}});
        let es = tls_certificates(&mut tls);
        assert_eq!(tls, json!({}));
        assert_eq!(es[0].key, "api");
        assert_eq!(es[0].secrets, vec!["/key"]);
        assert!(es[1].key.starts_with("sha-"));
    }
}
