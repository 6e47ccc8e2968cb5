//! Restoring Caddy through its admin API, atomically: the whole config is rebuilt from the snapshot's
//! entities and replaced in one request, `PATCH /config/` with `If-Match` (so that a change made
//! between the plan and the apply is refused, not overwritten), or `POST /load` when the gateway has
//! no config at all. Caddy applies a new config completely or not at all.
//!
//! Restoring into a different Caddy (a staging one) keeps that Caddy's own `admin` settings, so that
//! the restore does not move or close the admin API it goes through; the plan shows the rewrite.

use serde_json::{Map, Value};

use super::{Applied, Plan, Rewrite, Step, Target};
use crate::error::{Error, Result};
use crate::gateway::caddy::{request, routes_dir, DEFAULT_ENDPOINT};
use crate::gateway::canonical::file_name;
use crate::gateway::{Capture, Entity, GatewayOptions};

/// A Caddy admin API to restore into.
pub struct CaddyTarget {
    opts: GatewayOptions,
    endpoint: String,
}

impl CaddyTarget {
    /// The Caddy at `opts.endpoint` (default `http://localhost:2019`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `--file` is given: a restore needs a live admin API.
    pub fn new(opts: &GatewayOptions) -> Result<Self> {
        let endpoint = super::admin_url(
            opts,
            DEFAULT_ENDPOINT,
            "Caddy",
            "to write a config file, use `gatevault export`",
        )?;
        let mut opts = opts.clone();
        opts.endpoint = Some(endpoint.clone());
        Ok(Self { opts, endpoint })
    }
}

/// Caddy's ETag of a config body: `"/config/ <FNV-1a 32 of the body, hex>"`. Caddy sends it only as
/// an HTTP/1.1 trailer, so it is computed here from the body instead.
fn etag(body: &[u8]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in body {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    format!("\"/config/ {h:08x}\"")
}

/// Rebuilds a Caddy config from the entities of a capture (the inverse of the capture's split).
pub fn join(entities: &[Entity]) -> Result<Value> {
    let bad = |e: &Entity, why: &str| {
        Error::integrity(
            format!("entity {}", e.path),
            format!("{why}: the snapshot cannot be turned back into a Caddy config"),
        )
    };
    let mut top = Map::new();
    let mut apps = Map::new();
    let mut servers = Map::new();
    // By document path: a route's key (`<server>/<route key>`) is ambiguous when a server name or a
    // route id holds a `/`, its path is not.
    let mut routes: std::collections::HashMap<&str, &Value> = Default::default();
    let mut certs = vec![];
    // A top-level field (`caddy/<field>.json`) has its name for kind, so its folder tells it apart
    // from an app, server, route or certificate, whatever it is called.
    let top_level = |e: &Entity| e.path.rsplit_once('/').map(|(dir, _)| dir) == Some("caddy");
    for e in entities.iter().filter(|e| !top_level(e)) {
        match e.kind.as_str() {
            "route" => {
                routes.insert(e.path.as_str(), &e.value);
            }
            "certificate" => certs.push(e.value.clone()),
            _ => {}
        }
    }
    for e in entities {
        if top_level(e) {
            top.insert(e.key.clone(), e.value.clone());
            continue;
        }
        match e.kind.as_str() {
            "route" | "certificate" => {}
            "app" => {
                apps.insert(e.key.clone(), e.value.clone());
            }
            "server" => {
                let mut s = e.value.clone();
                let keys = s
                    .as_object_mut()
                    .and_then(|m| m.remove("route_keys"))
                    .unwrap_or(Value::Array(vec![]));
                let mut list = vec![];
                for k in keys
                    .as_array()
                    .ok_or_else(|| bad(e, "route_keys is not a list"))?
                {
                    let k = k
                        .as_str()
                        .ok_or_else(|| bad(e, "a route key is not text"))?;
                    let path = format!("{}/{}.json", routes_dir(&e.key), file_name(k));
                    let r = routes
                        .get(path.as_str())
                        .ok_or_else(|| bad(e, &format!("route {k:?} is missing")))?;
                    list.push((*r).clone());
                }
                if !list.is_empty() {
                    s["routes"] = Value::Array(list);
                }
                servers.insert(e.key.clone(), s);
            }
            _ => {
                top.insert(e.key.clone(), e.value.clone());
            }
        }
    }
    if !servers.is_empty() {
        let http = apps
            .entry("http")
            .or_insert_with(|| Value::Object(Map::new()));
        http["servers"] = Value::Object(servers);
    }
    if !certs.is_empty() {
        let tls = apps
            .entry("tls")
            .or_insert_with(|| Value::Object(Map::new()));
        if tls.get("certificates").is_none() {
            tls["certificates"] = Value::Object(Map::new());
        }
        tls["certificates"]["load_pem"] = Value::Array(certs);
    }
    if !apps.is_empty() {
        top.insert("apps".into(), Value::Object(apps));
    }
    Ok(Value::Object(top))
}

impl Target for CaddyTarget {
    fn kind(&self) -> &str {
        "caddy"
    }

    fn capture(&self) -> Result<Capture> {
        crate::gateway::caddy::capture(&self.opts)
    }

    fn adapt(&self, desired: &mut Capture, live: &Capture) -> Result<Vec<Rewrite>> {
        if desired.source.endpoint == live.source.endpoint {
            return Ok(vec![]);
        }
        // Another Caddy: keep its admin settings.
        let admin = |c: &Capture| c.entities.iter().position(|e| e.path == "caddy/admin.json");
        let show = |e: Option<&Entity>| {
            e.and_then(|e| e.value.get("listen").and_then(Value::as_str))
                .unwrap_or("localhost:2019 (default)")
                .to_string()
        };
        let (d, l) = (admin(desired), admin(live));
        let from = show(d.map(|i| &desired.entities[i]));
        let to = show(l.map(|i| &live.entities[i]));
        if d.map(|i| &desired.entities[i].value) == l.map(|i| &live.entities[i].value) {
            return Ok(vec![]);
        }
        if let Some(i) = d {
            desired.entities.remove(i);
        }
        if let Some(i) = l {
            desired.entities.push(live.entities[i].clone());
        }
        Ok(vec![Rewrite {
            what: "Caddy admin settings (kept from the target)".into(),
            from,
            to,
            count: 1,
        }])
    }

    fn apply(
        &self,
        desired: &Capture,
        live: &Capture,
        plan: &Plan,
        done: &mut dyn FnMut(&Step),
    ) -> Result<Applied> {
        let config = join(&desired.entities)?;
        let body = serde_json::to_vec(&config).expect("config serializes");
        let live_body = live
            .raw
            .get("caddy.json")
            .map(Vec::as_slice)
            .unwrap_or(b"null");
        let empty = serde_json::from_slice::<Value>(live_body).map_or(true, |v| v.is_null());
        let (method, url, tag) = if empty {
            ("POST", format!("{}/load", self.endpoint), None)
        } else {
            (
                "PATCH",
                format!("{}/config/", self.endpoint),
                Some(etag(live_body)),
            )
        };
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(t) = &tag {
            headers.push(("If-Match", t.as_str()));
        }
        let gw = || format!("caddy at {}", self.endpoint);
        let resp = request(method, &url, &headers, &body).map_err(|e| {
            Error::gateway(
                gw(),
                format!("{method} {url} failed ({e}): the admin API went away; the config may or may not have been loaded"),
            )
        })?;
        match resp.status {
            200..=299 => {}
            412 => {
                return Err(Error::gateway(
                    gw(),
                    "the config changed between the plan and the apply (HTTP 412 on If-Match): nothing was changed; run the restore again to plan against the new config",
                ))
            }
            s => {
                return Err(Error::gateway(
                    gw(),
                    format!(
                        "Caddy refused the config with HTTP {s}: {}; nothing was changed (Caddy loads a config completely or not at all)",
                        String::from_utf8_lossy(&resp.body).trim()
                    ),
                ))
            }
        }
        for s in &plan.steps {
            done(s);
        }
        Ok(Applied {
            method: match tag {
                Some(_) => "PATCH /config/ with If-Match (atomic)".into(),
                None => "POST /load (atomic)".into(),
            },
            steps: plan.steps.iter().map(Step::describe).collect(),
            notes: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn etag_matches_caddy() {
        // FNV-1a 32 test vectors.
        assert_eq!(etag(b""), "\"/config/ 811c9dc5\"");
        assert_eq!(etag(b"a"), "\"/config/ e40c292c\"");
        // Caddy hex-encodes the four hash bytes: leading zeros stay.
        assert_eq!(etag(b"68"), "\"/config/ 0de8d5a3\"");
    }

    #[test]
    fn join_inverts_the_split() {
        let config = json!({
            "admin": {"listen": "127.0.0.1:2999"},
            "apps": {
                "http": {"grace_period": 1, "servers": {
                    "a": {"listen": [":80"], "routes": [
                        {"match": [{"path": ["/x"]}], "handle": [{"handler": "static_response"}]},
                        {"@id": "id1", "handle": []},
                        {"match": [{"path": ["/x"]}]}
                    ]},
                    "b": {"listen": [":81"]}
                }},
                "tls": {"certificates": {"load_pem": [{"certificate": "C", "key": "K", "tags": ["t"]}]}},
                "pki": {"certificate_authorities": {}}
            },
            "logging": {"logs": {}}
        });
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.json");
        std::fs::write(&f, serde_json::to_vec(&config).unwrap()).unwrap();
        let c = crate::gateway::caddy::capture(&GatewayOptions {
            kind: "caddy".into(),
            file: Some(f),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(join(&c.entities).unwrap(), config);
    }

    #[test]
    fn join_tells_apart_route_keys_that_hold_a_slash() {
        // `a` + route `b/c` and `a/b` + route `c` both have the entity key `a/b/c`.
        let config = json!({"apps": {"http": {"servers": {
            "a": {"routes": [{"@id": "b/c", "handle": [{"handler": "static_response", "body": "1"}]}]},
            "a/b": {"routes": [{"@id": "c", "handle": [{"handler": "static_response", "body": "2"}]}]}
        }}}});
        let s = crate::gateway::Source::new("caddy", "file:x");
        let es =
            crate::gateway::caddy::entities(&s, &serde_json::to_vec(&config).unwrap()).unwrap();
        assert_eq!(join(&es).unwrap(), config);
        // Top-level fields named like the parts of a config stay top-level fields.
        let config = json!({"route": {"a": 1}, "server": [1], "app": "x", "certificate": 2});
        let es =
            crate::gateway::caddy::entities(&s, &serde_json::to_vec(&config).unwrap()).unwrap();
        assert_eq!(join(&es).unwrap(), config);
    }
}
