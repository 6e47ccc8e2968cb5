//! Kong: decK declarative files (nested or flat), DB-less `GET /config`, and the Admin API.
//!
//! Every input is first brought to one model, a decK document whose references are names, and then
//! split into entities, one per file under `kong/<entity kind>/`. Ids are dropped where a natural key
//! exists (services, routes, consumers, plugins, upstreams, targets, snis, groups, vaults, keys) and
//! kept where they are the identity (certificates, CA certificates, credentials without a natural
//! key). [`to_deck`] turns the entities back into a decK file.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::canonical::{self, str_field};
use super::{Capture, Entity, GatewayOptions, Source};
use crate::error::{Error, Result};

/// Consumer credential kinds: decK field, natural-key field (else the id), secret and personal fields.
const CREDENTIALS: &[(&str, &str, &[&str], &[&str])] = &[
    ("keyauth_credentials", "id", &["/key"], &[]),
    (
        "basicauth_credentials",
        "username",
        &["/password"],
        &["/username"],
    ),
    (
        "hmacauth_credentials",
        "username",
        &["/secret"],
        &["/username"],
    ),
    ("jwt_secrets", "key", &["/secret"], &[]),
    ("oauth2_credentials", "client_id", &["/client_secret"], &[]),
    ("mtls_auth_credentials", "id", &[], &["/subject_name"]),
    ("acls", "group", &[], &[]),
];

/// Fields whose order carries no meaning: sorted.
const SETS: &[&str] = &[
    "tags",
    "methods",
    "protocols",
    "hosts",
    "paths",
    "snis",
    "groups",
];

/// Words that make a plugin or vault configuration field secret.
const SECRET_WORDS: &[&str] = &["password", "secret", "token", "private_key", "api_key"];

/// The reference fields a plugin may carry, in the order they appear in its key.
const PLUGIN_SCOPES: &[&str] = &["service", "route", "consumer", "consumer_group"];

/// Admin API collections and the decK fields they become.
const ADMIN_COLLECTIONS: &[(&str, &str)] = &[
    ("services", "services"),
    ("routes", "routes"),
    ("plugins", "plugins"),
    ("consumers", "consumers"),
    ("consumer_groups", "consumer_groups"),
    ("upstreams", "upstreams"),
    ("certificates", "certificates"),
    ("snis", "snis"),
    ("ca_certificates", "ca_certificates"),
    ("vaults", "vaults"),
    ("key-sets", "key_sets"),
    ("keys", "keys"),
    ("key-auths", "keyauth_credentials"),
    ("basic-auths", "basicauth_credentials"),
    ("hmac-auths", "hmacauth_credentials"),
    ("jwts", "jwt_secrets"),
    ("oauth2", "oauth2_credentials"),
    ("acls", "acls"),
    ("mtls-auths", "mtls_auth_credentials"),
];

/// Page size asked of the Admin API (its maximum).
const PAGE_SIZE: usize = 1000;

/// Default Admin API address.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:8001";

/// Name of the raw export of an Admin API capture (the listing, ids and all).
pub const ADMIN_LISTING: &str = "kong-admin.json";

/// Name of the raw export of a DB-less capture (`GET /config`).
pub const DBLESS_CONFIG: &str = "kong-config.yaml";

/// Captures Kong as `opts` says: a decK file with `--file`, else the Admin API at `--endpoint`.
///
/// # Errors
/// See [`super::capture`].
pub fn capture(opts: &GatewayOptions) -> Result<Capture> {
    let Some(file) = &opts.file else {
        return capture_admin(opts);
    };
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
    let mut source = Source::new("kong", &format!("file:{}", abs.display()));
    let bytes =
        std::fs::read(file).map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
    let doc = canonical::parse_json_or_yaml(&bytes).map_err(|e| {
        Error::gateway(
            source.describe(),
            format!(
                "{} is not valid YAML or JSON: {e}; fix it or dump it again with `deck gateway dump`",
                file.display()
            ),
        )
    })?;
    let full_scope = scope(str_field(&doc, "_workspace"), &opts.select_tags)
        .map_err(|why| Error::gateway(source.describe(), format!("{}: {why}", file.display())))?;
    source.scope = scope(str_field(&doc, "_workspace"), &[]).unwrap_or_default();
    let entities = from_deck(&doc, &opts.select_tags).map_err(|reason| {
        Error::gateway(source.describe(), format!("{}: {reason}", file.display()))
    })?;
    source.scope = full_scope;
    let name = file
        .file_name()
        .map_or("kong.yaml".into(), |n| n.to_string_lossy().into_owned());
    Ok(Capture {
        source,
        raw: BTreeMap::from([(name, bytes)]),
        entities,
    })
}

/// Headers for the Admin API from the environment: `KONG_ADMIN_TOKEN` becomes `Kong-Admin-Token`, and
/// `DECK_HEADERS` (`name:value,name:value`, as decK reads it) adds more.
fn admin_headers() -> Vec<(String, String)> {
    let mut h = vec![];
    if let Ok(t) = std::env::var("KONG_ADMIN_TOKEN") {
        h.push(("Kong-Admin-Token".to_string(), t));
    }
    if let Ok(list) = std::env::var("DECK_HEADERS") {
        for kv in list.split(',') {
            if let Some((k, v)) = kv.split_once(':') {
                h.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    h
}

/// A client for the Admin API at `endpoint`, with the headers [`admin_headers`] gives.
pub(crate) fn admin_client(endpoint: &str, describe: String) -> super::http::Client {
    super::http::Client::new(
        endpoint,
        describe,
        admin_headers(),
        "set KONG_ADMIN_TOKEN (or DECK_HEADERS) to a token the Admin API accepts",
    )
}

/// The members of a consumer group: Kong answers `GET /consumer_groups/{id}/consumers` with
/// `{"consumers": [...]}` in one piece; a paged `data` answer is read page by page.
fn members(c: &super::http::Client, ws: &str, path: &str) -> Result<Vec<Value>> {
    match c.get_json(&format!("{ws}{path}"))? {
        Some(page) => match group_members(&page) {
            Some(m) => Ok(m),
            None => Ok(paginate(c, ws, path)?.unwrap_or_default()),
        },
        None => Ok(vec![]),
    }
}

/// The members in an answer to `GET /consumer_groups/{id}/consumers`: its `consumers` list (none
/// when absent), or `None` when the answer is a page of a listing (`data`), to be read page by page.
pub fn group_members(answer: &Value) -> Option<Vec<Value>> {
    if answer.get("data").is_some() {
        return None;
    }
    Some(
        answer
            .get("consumers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    )
}

/// One page of an Admin API listing in workspace `ws` (`""` or `/<workspace>`): its items and the
/// path (or URL) of the next page; `None` when the page has no `data` list. A `next` link is taken
/// as Kong writes it: workspace-relative paths get the workspace in front.
pub fn admin_page(ws: &str, page: &Value) -> Option<(Vec<Value>, Option<String>)> {
    let data = page.get("data").and_then(Value::as_array)?;
    let next = match page.get("next") {
        Some(Value::String(n)) if n.starts_with(&format!("{ws}/")) || ws.is_empty() => {
            Some(n.clone())
        }
        Some(Value::String(n)) if n.starts_with('/') => Some(format!("{ws}{n}")),
        Some(Value::String(n)) => Some(n.clone()),
        _ => None,
    };
    Some((data.clone(), next))
}

/// Every item of an Admin API collection at `path`, following `next` links; `None` when the
/// collection does not exist in this Kong (404).
fn paginate(c: &super::http::Client, ws: &str, path: &str) -> Result<Option<Vec<Value>>> {
    let mut items = vec![];
    let mut next = Some(format!("{ws}{path}?size={PAGE_SIZE}"));
    let mut pages = 0usize;
    while let Some(p) = next.take() {
        let Some(page) = c.get_json(&p)? else {
            return Ok(None);
        };
        let (data, next_page) = admin_page(ws, &page).ok_or_else(|| {
            Error::gateway(
                "kong",
                format!(
                    "{}: a list page without `data`; is this Kong's Admin API?",
                    c.url(&p)
                ),
            )
        })?;
        items.extend(data);
        pages += 1;
        next = next_page;
        if pages > 100_000 {
            return Err(Error::gateway(
                "kong",
                format!("{}: pagination does not end", c.url(path)),
            ));
        }
    }
    Ok(Some(items))
}

/// Captures Kong through its Admin API (or `GET /config` when it runs without a database).
fn capture_admin(opts: &GatewayOptions) -> Result<Capture> {
    let endpoint = opts
        .endpoint
        .as_deref()
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim_end_matches('/');
    let mut source = Source::new("kong", endpoint);
    let full_scope = scope(opts.workspace.as_deref(), &opts.select_tags)
        .map_err(|why| Error::gateway(source.describe(), why))?;
    source.scope = scope(opts.workspace.as_deref(), &[]).unwrap_or_default();
    let ws = opts
        .workspace
        .as_ref()
        .map_or(String::new(), |w| format!("/{w}"));
    let c = admin_client(endpoint, source.describe());
    let root = c.get_json("/")?.ok_or_else(|| {
        Error::gateway(
            source.describe(),
            format!("{endpoint}/ answers 404: is --endpoint Kong's Admin API?"),
        )
    })?;
    source.version = str_field(&root, "version").map(str::to_string);
    let dbless = root
        .pointer("/configuration/database")
        .and_then(Value::as_str)
        == Some("off");
    let (doc, raw_name, raw) = if dbless {
        let cfg = c.get_json(&format!("{ws}/config"))?.unwrap_or(Value::Null);
        let (doc, text) =
            dbless_config(&cfg).map_err(|why| Error::gateway(source.describe(), why))?;
        (doc, DBLESS_CONFIG, text)
    } else {
        let mut doc = Map::new();
        for (path, field) in ADMIN_COLLECTIONS {
            let Some(mut items) = paginate(&c, &ws, &format!("/{path}"))? else {
                // Every Kong has services: a 404 there means the workspace (or the API) is wrong.
                if *path == "services" {
                    return Err(Error::gateway(
                        source.describe(),
                        format!(
                            "{endpoint}{ws}/services answers 404: check --workspace{}",
                            if ws.is_empty() { " and --endpoint" } else { "" }
                        ),
                    ));
                }
                tracing::debug!("{endpoint}: no /{path} in this Kong; skipped");
                continue;
            };
            for item in items.iter_mut() {
                let id = str_field(item, "id").unwrap_or_default().to_string();
                let nested = match *path {
                    "upstreams" => Some(("targets", format!("/upstreams/{id}/targets"))),
                    "consumer_groups" => {
                        Some(("consumers", format!("/consumer_groups/{id}/consumers")))
                    }
                    _ => None,
                };
                if let Some((f, p)) = nested {
                    let children = match f {
                        "consumers" => members(&c, &ws, &p)?,
                        _ => paginate(&c, &ws, &p)?.unwrap_or_default(),
                    };
                    item[f] = Value::Array(children);
                }
            }
            doc.insert((*field).into(), Value::Array(items));
        }
        let doc = Value::Object(doc);
        let raw = canonical::to_bytes(&doc);
        (doc, ADMIN_LISTING, raw)
    };
    let entities = from_deck(&doc, &opts.select_tags)
        .map_err(|reason| Error::gateway(source.describe(), reason))?;
    source.scope = full_scope;
    Ok(Capture {
        source,
        raw: BTreeMap::from([(raw_name.to_string(), raw)]),
        entities,
    })
}

/// The declarative document in Kong's answer to `GET /config` (DB-less mode), and its text as given.
///
/// # Errors
/// A message when the answer has no `config` text or the text is not YAML or JSON.
pub fn dbless_config(answer: &Value) -> std::result::Result<(Value, Vec<u8>), String> {
    let text = str_field(answer, "config")
        .ok_or("GET /config gave no `config`: is this Kong in DB-less mode?")?;
    let doc = canonical::parse_json_or_yaml(text.as_bytes())
        .map_err(|e| format!("GET /config is not a declarative config: {e}"))?;
    Ok((doc, text.as_bytes().to_vec()))
}

/// Marker of the select tags in a source's scope: `workspace team-a; select tags a,b`.
pub const SELECT_TAGS: &str = "select tags ";

/// The scope a Kong capture records, read back by [`scope_parts`]: `workspace team-a`, `select tags
/// a,b` or both, joined by `; `.
///
/// # Errors
/// A message when the workspace name or a tag breaks Kong's own rules, which also keep the scope
/// readable: a workspace name is letters, digits, `.`, `-`, `_` and `~`; a tag is not empty and has no
/// `,` or `/` (the Admin API's `tags=` filter joins tags with them).
pub fn scope(
    workspace: Option<&str>,
    tags: &[String],
) -> std::result::Result<Option<String>, String> {
    if let Some(w) = workspace.filter(|w| {
        w.is_empty()
            || !w
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'))
    }) {
        return Err(format!(
            "workspace name {w:?} is not one Kong accepts (letters, digits, `.`, `-`, `_`, `~`)"
        ));
    }
    if let Some(t) = tags.iter().find(|t| t.is_empty() || t.contains([',', '/'])) {
        return Err(format!(
            "tag {t:?} is not one Kong accepts (not empty, no `,` or `/`)"
        ));
    }
    let ws = workspace.map(|w| format!("workspace {w}"));
    if tags.is_empty() {
        return Ok(ws);
    }
    let t = format!("{SELECT_TAGS}{}", tags.join(","));
    Ok(Some(match ws {
        Some(w) => format!("{w}; {t}"),
        None => t,
    }))
}

/// The workspace and the select tags a source's scope records (see [`scope`]). The workspace comes
/// first and has no `;`, so a tag may hold `; `.
pub fn scope_parts(scope: Option<&str>) -> (Option<String>, Vec<String>) {
    let s = scope.unwrap_or_default();
    let (ws, rest) = match s.strip_prefix("workspace ") {
        Some(r) => match r.split_once("; ") {
            Some((w, t)) => (Some(w), t),
            None => (Some(r), ""),
        },
        None => (None, s),
    };
    let tags = rest
        .strip_prefix(SELECT_TAGS)
        .map(|t| t.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    (ws.map(str::to_string), tags)
}

/// A reference (`"name"`, `{"name": ..}` or `{"id": ..}`) as a name, through `ids` for ids.
fn reference(v: &Value, ids: &HashMap<String, String>) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .get("name")
            .or_else(|| m.get("username"))
            .or_else(|| m.get("id"))
            .and_then(Value::as_str)?
            .to_string(),
        _ => return None,
    };
    Some(ids.get(&s).cloned().unwrap_or(s))
}

fn list<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The natural key of an entity: the first of `fields` present, else its id.
fn natural(v: &Value, fields: &[&str]) -> Option<String> {
    named(v, fields).or_else(|| named(v, &["id"]))
}

/// The first of `fields` that is non-empty text or a number. Where none is, the natural key is the
/// id, which must then be kept.
fn named(v: &Value, fields: &[&str]) -> Option<String> {
    fields.iter().find_map(|f| match v.get(*f) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Ids to names, over every entity kind that is referenced by name.
fn id_map(doc: &Value) -> HashMap<String, String> {
    let mut ids = HashMap::new();
    let mut add = |e: &Value, fields: &[&str]| {
        if let (Some(id), Some(name)) = (str_field(e, "id"), natural(e, fields)) {
            ids.insert(id.to_string(), name);
        }
    };
    for s in list(doc, "services") {
        add(s, &["name"]);
        for r in list(s, "routes") {
            add(r, &["name"]);
        }
    }
    for r in list(doc, "routes") {
        add(r, &["name"]);
    }
    for c in list(doc, "consumers") {
        add(c, &["username", "custom_id"]);
    }
    for (field, name) in [
        ("consumer_groups", "name"),
        ("upstreams", "name"),
        ("key_sets", "name"),
    ] {
        for e in list(doc, field) {
            add(e, &[name]);
        }
    }
    ids
}

/// Strips volatile fields and child lists, drops the id where a natural key exists, sorts sets.
fn clean(v: &Value, children: &[&str], keep_id: bool) -> Value {
    let mut v = v.clone();
    canonical::strip(&mut v, canonical::VOLATILE);
    canonical::drop_fields(&mut v, children);
    if !keep_id {
        canonical::drop_fields(&mut v, &["id"]);
    }
    for s in SETS {
        canonical::sort_set(&mut v, s);
    }
    // An unset field reads as null from the Admin API and is absent from decK files: both mean unset.
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

/// JSON pointers of fields below `v` whose names contain a secret word.
fn secret_fields(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                let lk = k.to_ascii_lowercase();
                if SECRET_WORDS.iter().any(|w| lk.contains(w)) && !x.is_null() && !x.is_boolean() {
                    out.push(p);
                } else {
                    secret_fields(x, &p, out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                secret_fields(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn has_tags(v: &Value, select: &[String]) -> bool {
    select.is_empty()
        || select
            .iter()
            .all(|t| list(v, "tags").iter().any(|x| x.as_str() == Some(t)))
}

struct Builder<'a> {
    ids: HashMap<String, String>,
    select: &'a [String],
    out: Vec<Entity>,
    /// Consumer group to member consumers, as consumers name their groups.
    members: BTreeMap<String, Vec<String>>,
    /// The consumer groups the capture holds (in the file and selected). A consumer's membership
    /// in any other group (one another decK file manages, found through lookup tags) stays on the
    /// consumer, or it would be lost.
    groups: HashSet<String>,
}

impl Builder<'_> {
    fn push(&mut self, e: Entity) {
        self.out.push(e);
    }

    /// A plugin with its scope references (`service`, `route`, ...) given by the parent or itself.
    fn plugin(
        &mut self,
        p: &Value,
        parent: Option<(&str, &str)>,
    ) -> std::result::Result<(), String> {
        let name = str_field(p, "name").ok_or("a plugin has no name")?;
        let mut v = clean(p, &[], false);
        let m = v.as_object_mut().ok_or("a plugin is not a mapping")?;
        for s in PLUGIN_SCOPES {
            if let Some(r) = m.get(*s).and_then(|r| reference(r, &self.ids)) {
                m.insert((*s).into(), Value::String(r));
            } else {
                m.remove(*s);
            }
        }
        if let Some((field, parent)) = parent {
            m.insert(field.into(), Value::String(parent.into()));
        }
        let scope: Vec<String> = PLUGIN_SCOPES
            .iter()
            .filter_map(|s| Some(format!("{s}={}", str_field(&v, s)?)))
            .collect();
        let scope = if scope.is_empty() {
            "global".to_string()
        } else {
            scope.join(",")
        };
        let label = match str_field(&v, "instance_name") {
            Some(i) => format!("{name}:{i}"),
            None => name.to_string(),
        };
        let mut secrets = vec![];
        secret_fields(
            v.get("config").unwrap_or(&Value::Null),
            "/config",
            &mut secrets,
        );
        let subject = str_field(&v, "consumer").map(|c| format!("kong:consumer={c}"));
        let mut e = Entity::new("kong/plugins", "plugin", &format!("{label}@{scope}"), v);
        e.secrets = secrets;
        e.subject = subject;
        self.push(e);
        Ok(())
    }

    fn route(&mut self, r: &Value, service: Option<&str>) -> std::result::Result<(), String> {
        if !has_tags(r, self.select) {
            return Ok(());
        }
        let key = natural(r, &["name"]).ok_or("a route has neither name nor id")?;
        let keep_id = named(r, &["name"]).is_none();
        let mut v = clean(r, &["plugins"], keep_id);
        let svc = service
            .map(str::to_string)
            .or_else(|| r.get("service").and_then(|s| reference(s, &self.ids)));
        match (v.as_object_mut(), svc) {
            (Some(m), Some(s)) => {
                m.insert("service".into(), Value::String(s));
            }
            (Some(m), None) => {
                m.remove("service");
            }
            _ => return Err(format!("route {key} is not a mapping")),
        }
        for p in list(r, "plugins") {
            self.plugin(p, Some(("route", &key)))?;
        }
        self.push(Entity::new("kong/routes", "route", &key, v));
        Ok(())
    }

    fn consumer(&mut self, c: &Value) -> std::result::Result<(), String> {
        if !has_tags(c, self.select) {
            return Ok(());
        }
        let key = natural(c, &["username", "custom_id"]).ok_or("a consumer has no username")?;
        let subject = format!("kong:consumer={key}");
        let children: Vec<&str> = CREDENTIALS.iter().map(|c| c.0).chain(["plugins"]).collect();
        let keep_id = named(c, &["username", "custom_id"]).is_none();
        let mut v = clean(c, &children, keep_id);
        // Group membership lives in the group's entity, whichever side the input named it on,
        // when the capture holds the group.
        let mut elsewhere: Vec<String> = vec![];
        for g in list(c, "groups") {
            match reference(g, &self.ids) {
                Some(g) if self.groups.contains(&g) => {
                    self.members.entry(g).or_default().push(key.clone())
                }
                Some(g) => elsewhere.push(g),
                None => {}
            }
        }
        canonical::drop_fields(&mut v, &["groups"]);
        if !elsewhere.is_empty() {
            elsewhere.sort();
            elsewhere.dedup();
            v["groups"] = json!(elsewhere);
        }
        self.push(
            Entity::new("kong/consumers", "consumer", &key, v)
                .personal(&["/username", "/custom_id"])
                .subject(subject.clone()),
        );
        for (field, nat, secret, personal) in CREDENTIALS {
            for cred in list(c, field) {
                self.credential(field, nat, secret, personal, cred, &key)?;
            }
        }
        for p in list(c, "plugins") {
            self.plugin(p, Some(("consumer", &key)))?;
        }
        Ok(())
    }

    fn credential(
        &mut self,
        field: &str,
        nat: &str,
        secret: &[&str],
        personal: &[&str],
        cred: &Value,
        consumer: &str,
    ) -> std::result::Result<(), String> {
        if !cred.is_object() {
            return Err(format!(
                "a {field} entry of consumer {consumer} is not a mapping"
            ));
        }
        // Without a natural key or an id (a hand-written decK file), the credential's position among
        // its consumer's credentials of this kind names it: never its secret.
        let kind = field.trim_end_matches('s');
        let own = match natural(cred, &[nat]) {
            Some(k) => k,
            None => {
                let n = self
                    .out
                    .iter()
                    .filter(|e| e.kind == kind && str_field(&e.value, "consumer") == Some(consumer))
                    .count();
                format!("#{}", n + 1)
            }
        };
        let mut v = clean(cred, &[], nat == "id" || named(cred, &[nat]).is_none());
        if let Some(m) = v.as_object_mut() {
            m.insert("consumer".into(), Value::String(consumer.into()));
        }
        self.push(
            Entity::new(
                &format!("kong/{field}"),
                kind,
                &format!("{consumer}@{own}"),
                v,
            )
            .secret(secret)
            .personal(personal)
            .subject(format!("kong:consumer={consumer}")),
        );
        Ok(())
    }

    /// A top-level entity of `field` keyed by `fields` (else its id, which is then kept).
    fn simple(
        &mut self,
        doc: &Value,
        field: &str,
        kind: &str,
        fields: &[&str],
        children: &[&str],
        secret: &[&str],
    ) -> std::result::Result<Vec<(String, Value)>, String> {
        let mut parents = vec![];
        for e in list(doc, field) {
            if !has_tags(e, self.select) {
                continue;
            }
            let key = natural(e, fields)
                .ok_or_else(|| format!("a {kind} has no {} or id", fields.join("/")))?;
            let keep_id = named(e, fields).is_none();
            let mut v = clean(e, children, keep_id);
            let mut secrets: Vec<String> = vec![];
            if kind == "vault" {
                secret_fields(
                    v.get("config").unwrap_or(&Value::Null),
                    "/config",
                    &mut secrets,
                );
            }
            if kind == "key" {
                if let Some(m) = v.as_object_mut() {
                    if let Some(s) = m.get("set").and_then(|s| reference(s, &self.ids)) {
                        m.insert("set".into(), Value::String(s));
                    }
                }
            }
            let mut ent = Entity::new(&format!("kong/{field}"), kind, &key, v).secret(secret);
            ent.secrets.extend(secrets);
            self.push(ent);
            parents.push((key, e.clone()));
        }
        Ok(parents)
    }
}

/// Splits a decK document into canonical entities; `select` keeps only entities carrying all these
/// tags (decK's `--select-tag`).
///
/// # Errors
/// A message naming the malformed entity.
pub fn from_deck(doc: &Value, select: &[String]) -> std::result::Result<Vec<Entity>, String> {
    if !doc.is_object() {
        return Err("not a decK file: the top level is not a mapping".into());
    }
    let mut b = Builder {
        ids: id_map(doc),
        select,
        out: vec![],
        members: BTreeMap::new(),
        groups: list(doc, "consumer_groups")
            .iter()
            .filter(|g| has_tags(g, select))
            .filter_map(|g| natural(g, &["name"]))
            .collect(),
    };
    let meta: Map<String, Value> = doc
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with('_'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    b.push(Entity::new("kong", "deck", "_deck", Value::Object(meta)));
    for s in b.simple(
        doc,
        "services",
        "service",
        &["name"],
        &["routes", "plugins"],
        &[],
    )? {
        let (key, raw) = s;
        for r in list(&raw, "routes") {
            b.route(r, Some(&key))?;
        }
        for p in list(&raw, "plugins") {
            b.plugin(p, Some(("service", &key)))?;
        }
    }
    for r in list(doc, "routes") {
        b.route(r, None)?;
    }
    for c in list(doc, "consumers") {
        b.consumer(c)?;
    }
    // Credentials listed on their own (Admin API captures) name their consumer.
    for (field, nat, secret, personal) in CREDENTIALS {
        for cred in list(doc, field) {
            let consumer = cred
                .get("consumer")
                .and_then(|c| reference(c, &b.ids))
                .ok_or_else(|| format!("a {field} entry names no consumer"))?;
            b.credential(field, nat, secret, personal, cred, &consumer)?;
        }
    }
    for (key, raw) in b.simple(
        doc,
        "consumer_groups",
        "consumer_group",
        &["name"],
        &["plugins", "consumers"],
        &[],
    )? {
        let mut members: Vec<String> = list(&raw, "consumers")
            .iter()
            .filter_map(|c| reference(c, &b.ids))
            .chain(b.members.remove(&key).unwrap_or_default())
            .collect();
        members.sort();
        members.dedup();
        if !members.is_empty() {
            // The group's own entity (`simple` pushed every group before this loop began).
            if let Some(group) = b
                .out
                .iter_mut()
                .rev()
                .find(|e| e.kind == "consumer_group" && e.key == key)
            {
                group.value["consumers"] = json!(members);
            }
        }
        for p in list(&raw, "plugins") {
            b.plugin(p, Some(("consumer_group", &key)))?;
        }
    }
    for p in list(doc, "plugins") {
        b.plugin(p, None)?;
    }
    for (key, raw) in b.simple(doc, "upstreams", "upstream", &["name"], &["targets"], &[])? {
        for t in list(&raw, "targets") {
            let target = natural(t, &["target"]).ok_or("a target has no target address")?;
            let mut v = clean(t, &[], named(t, &["target"]).is_none());
            v["upstream"] = Value::String(key.clone());
            b.push(Entity::new(
                "kong/targets",
                "target",
                &format!("{key}@{target}"),
                v,
            ));
        }
    }
    for (key, raw) in b.simple(
        doc,
        "certificates",
        "certificate",
        &[],
        &["snis"],
        &["/key", "/key_alt"],
    )? {
        for s in list(&raw, "snis") {
            let name = natural(s, &["name"]).ok_or("an SNI has no name")?;
            let mut v = clean(s, &[], named(s, &["name"]).is_none());
            v["certificate"] = Value::String(key.clone());
            b.push(Entity::new("kong/snis", "sni", &name, v));
        }
    }
    for s in list(doc, "snis") {
        let name = natural(s, &["name"]).ok_or("an SNI has no name")?;
        let mut v = clean(s, &[], named(s, &["name"]).is_none());
        if let Some(c) = s.get("certificate").and_then(|c| reference(c, &b.ids)) {
            v["certificate"] = Value::String(c);
        }
        b.push(Entity::new("kong/snis", "sni", &name, v));
    }
    b.simple(doc, "ca_certificates", "ca_certificate", &[], &[], &[])?;
    b.simple(doc, "vaults", "vault", &["prefix"], &[], &[])?;
    b.simple(doc, "key_sets", "key_set", &["name"], &[], &[])?;
    b.simple(
        doc,
        "keys",
        "key",
        &["name", "kid"],
        &[],
        &["/pem/private_key", "/jwk"],
    )?;
    b.out
        .iter_mut()
        .for_each(|e| e.value = canonical::sort_keys(&e.value));
    Ok(b.out)
}

/// A field that carries an Admin API id through [`from_deck`], for [`admin_ids`].
const ID_MARK: &str = "__gatevault_admin_id";

/// The Admin API id of every entity of an Admin API listing (the raw [`ADMIN_LISTING`] of a capture),
/// by document path. A restore needs them for entities whose URL cannot be their natural key
/// (plugins, ACLs, credentials keyed by username). The keys are made by [`from_deck`] itself, so they
/// are the paths of the capture.
///
/// # Errors
/// A message naming the malformed entity, as [`from_deck`].
pub fn admin_ids(listing: &Value) -> std::result::Result<BTreeMap<String, String>, String> {
    fn mark(item: &mut Value) {
        if let Some(id) = item.get("id").cloned() {
            item[ID_MARK] = id;
        }
    }
    let mut doc = listing.clone();
    if let Value::Object(m) = &mut doc {
        for items in m.values_mut().filter_map(Value::as_array_mut) {
            for item in items.iter_mut().filter(|i| i.is_object()) {
                mark(item);
                if let Some(Value::Array(targets)) = item.get_mut("targets") {
                    targets.iter_mut().filter(|t| t.is_object()).for_each(mark);
                }
            }
        }
    }
    Ok(from_deck(&doc, &[])?
        .into_iter()
        .filter_map(|e| {
            let id = e.value.get(ID_MARK)?.as_str()?.to_string();
            Some((e.path, id))
        })
        .collect())
}

/// Rebuilds a nested decK document from canonical entities (`kind` and content).
pub fn to_deck(entities: &[(String, Value)]) -> Value {
    let by = |kind: &str| -> Vec<Value> {
        entities
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut doc = Map::new();
    for (_, v) in entities.iter().filter(|(k, _)| k == "deck") {
        if let Value::Object(m) = v {
            doc.extend(m.clone());
        }
    }
    doc.entry("_format_version").or_insert(json!("3.0"));
    // Plugins with exactly one scope nest under that parent; the rest stay top level.
    let mut nested: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    let mut top_plugins = vec![];
    for mut p in by("plugin") {
        let scopes: Vec<&str> = PLUGIN_SCOPES
            .iter()
            .copied()
            .filter(|s| p.get(*s).is_some())
            .collect();
        if let [s] = scopes[..] {
            let parent = str_field(&p, s).unwrap_or_default().to_string();
            canonical::drop_fields(&mut p, &[s]);
            nested.entry((s.to_string(), parent)).or_default().push(p);
        } else {
            top_plugins.push(p);
        }
    }
    let mut take = |scope: &str, name: &str| {
        nested
            .remove(&(scope.into(), name.into()))
            .unwrap_or_default()
    };
    let mut routes_of: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut top_routes = vec![];
    for mut r in by("route") {
        let key = natural(&r, &["name"]).unwrap_or_default();
        let plugins = take("route", &key);
        if !plugins.is_empty() {
            r["plugins"] = Value::Array(plugins);
        }
        match str_field(&r, "service").map(str::to_string) {
            Some(s) => {
                canonical::drop_fields(&mut r, &["service"]);
                routes_of.entry(s).or_default().push(r);
            }
            None => top_routes.push(r),
        }
    }
    let mut services = vec![];
    for mut s in by("service") {
        let key = natural(&s, &["name"]).unwrap_or_default();
        if let Some(r) = routes_of.remove(&key) {
            s["routes"] = Value::Array(r);
        }
        let plugins = take("service", &key);
        if !plugins.is_empty() {
            s["plugins"] = Value::Array(plugins);
        }
        services.push(s);
    }
    // Routes whose service is not in the snapshot (a filtered capture) stay top level, naming it.
    for (service, rs) in routes_of {
        for mut r in rs {
            r["service"] = Value::String(service.clone());
            top_routes.push(r);
        }
    }
    let consumer_keys: std::collections::BTreeSet<String> = by("consumer")
        .iter()
        .map(|c| natural(c, &["username", "custom_id"]).unwrap_or_default())
        .collect();
    // Membership goes on the consumers (`groups`), as decK 3 writes it.
    let mut groups_of: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for g in by("consumer_group") {
        let name = natural(&g, &["name"]).unwrap_or_default();
        for m in list(&g, "consumers") {
            if let Some(m) = m.as_str() {
                groups_of
                    .entry(m.into())
                    .or_default()
                    .push(json!({"name": name}));
            }
        }
    }
    let mut consumers = vec![];
    for mut c in by("consumer") {
        let key = natural(&c, &["username", "custom_id"]).unwrap_or_default();
        // Groups outside the snapshot are named on the consumer already (as plain names).
        let mut groups: Vec<Value> = list(&c, "groups")
            .iter()
            .filter_map(Value::as_str)
            .map(|g| json!({ "name": g }))
            .collect();
        groups.extend(groups_of.remove(&key).unwrap_or_default());
        canonical::drop_fields(&mut c, &["groups"]);
        if !groups.is_empty() {
            c["groups"] = Value::Array(groups);
        }
        for (field, ..) in CREDENTIALS {
            let creds: Vec<Value> = by(field.trim_end_matches('s'))
                .into_iter()
                .filter(|x| str_field(x, "consumer") == Some(&key))
                .map(|mut x| {
                    canonical::drop_fields(&mut x, &["consumer"]);
                    x
                })
                .collect();
            if !creds.is_empty() {
                c[*field] = Value::Array(creds);
            }
        }
        let plugins = take("consumer", &key);
        if !plugins.is_empty() {
            c["plugins"] = Value::Array(plugins);
        }
        consumers.push(c);
    }
    let mut groups = vec![];
    for mut g in by("consumer_group") {
        let key = natural(&g, &["name"]).unwrap_or_default();
        // Members that are not consumers of the snapshot stay on the group, or they would be lost.
        let absent: Vec<Value> = list(&g, "consumers")
            .iter()
            .filter_map(Value::as_str)
            .filter(|m| !consumer_keys.contains(*m))
            .map(|m| json!({ "username": m }))
            .collect();
        canonical::drop_fields(&mut g, &["consumers"]);
        if !absent.is_empty() {
            g["consumers"] = Value::Array(absent);
        }
        let plugins = take("consumer_group", &key);
        if !plugins.is_empty() {
            g["plugins"] = Value::Array(plugins);
        }
        groups.push(g);
    }
    let mut upstreams = vec![];
    for mut u in by("upstream") {
        let key = natural(&u, &["name"]).unwrap_or_default();
        let targets: Vec<Value> = by("target")
            .into_iter()
            .filter(|t| str_field(t, "upstream") == Some(&key))
            .map(|mut t| {
                canonical::drop_fields(&mut t, &["upstream"]);
                t
            })
            .collect();
        if !targets.is_empty() {
            u["targets"] = Value::Array(targets);
        }
        upstreams.push(u);
    }
    let mut certificates = vec![];
    let mut top_snis = vec![];
    let mut snis = by("sni");
    for mut c in by("certificate") {
        let key = natural(&c, &[]).unwrap_or_default();
        let (mine, rest): (Vec<Value>, Vec<Value>) = snis
            .into_iter()
            .partition(|s| str_field(s, "certificate") == Some(&key));
        snis = rest;
        if !mine.is_empty() {
            c["snis"] = Value::Array(
                mine.into_iter()
                    .map(|mut s| {
                        canonical::drop_fields(&mut s, &["certificate"]);
                        s
                    })
                    .collect(),
            );
        }
        certificates.push(c);
    }
    top_snis.extend(snis);
    // Plugins whose parent is not in the snapshot (a filtered capture) stay top level with their reference.
    for ((scope, parent), ps) in nested {
        for mut p in ps {
            p[scope.as_str()] = Value::String(parent.clone());
            top_plugins.push(p);
        }
    }
    // Credentials whose consumer is not in the snapshot stay top level, naming it.
    for (field, ..) in CREDENTIALS {
        let orphans: Vec<Value> = by(field.trim_end_matches('s'))
            .into_iter()
            .filter(|x| str_field(x, "consumer").is_none_or(|c| !consumer_keys.contains(c)))
            .collect();
        if !orphans.is_empty() {
            doc.insert((*field).into(), Value::Array(orphans));
        }
    }
    for (field, v) in [
        ("services", services),
        ("routes", top_routes),
        ("consumers", consumers),
        ("consumer_groups", groups),
        ("plugins", top_plugins),
        ("upstreams", upstreams),
        ("certificates", certificates),
        ("snis", top_snis),
        ("ca_certificates", by("ca_certificate")),
        ("vaults", by("vault")),
        ("key_sets", by("key_set")),
        ("keys", by("key")),
    ] {
        if !v.is_empty() {
            doc.insert(field.into(), Value::Array(v));
        }
    }
    canonical::sort_keys(&Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECK: &str = r#"
_format_version: "3.0"
services:
- name: orders
  id: 11111111-0000-0000-0000-000000000001
  host: orders.svc
  created_at: 1700000000
  tags: [b, a]
  routes:
  - name: orders-get
    id: 22222222-0000-0000-0000-000000000001
    methods: [POST, GET]
    paths: [/orders]
    plugins:
    - name: rate-limiting
      config: {minute: 60, redis_password: hunter2}
  plugins:
  - name: key-auth
    config: {key_names: [apikey]}
consumers:
- username: alice
  custom_id: cust-1
  keyauth_credentials:
  - id: 33333333-0000-0000-0000-000000000001
    key: alice-key
  acls:
  - group: admins
    id: 44444444-0000-0000-0000-000000000001
plugins:
- name: prometheus
- name: rate-limiting
  service: orders
  consumer: {id: ignored-unknown}
  config: {minute: 5}
upstreams:
- name: up
  targets:
  - target: 10.0.0.1:80
    weight: 100
certificates:
- id: 55555555-0000-0000-0000-000000000001
  cert: CERT
  key: KEY
  snis:
  - name: api.example.com
"#;

    fn entities() -> Vec<Entity> {
        from_deck(
            &canonical::parse_json_or_yaml(DECK.as_bytes()).unwrap(),
            &[],
        )
        .unwrap()
    }

    fn get<'a>(es: &'a [Entity], path: &str) -> &'a Entity {
        es.iter().find(|e| e.path == path).unwrap_or_else(|| {
            panic!(
                "no {path} in {:?}",
                es.iter().map(|e| &e.path).collect::<Vec<_>>()
            )
        })
    }

    #[test]
    fn deck_splits_into_one_entity_per_file_with_names_for_ids() {
        let es = entities();
        let s = get(&es, "kong/services/orders.json");
        assert_eq!(
            s.value,
            json!({"host": "orders.svc", "name": "orders", "tags": ["a", "b"]})
        );
        let r = get(&es, "kong/routes/orders-get.json");
        assert_eq!(r.value["service"], "orders");
        assert_eq!(r.value["methods"], json!(["GET", "POST"]));
        assert!(r.value.get("id").is_none());
        let p = get(&es, "kong/plugins/rate-limiting@route=orders-get.json");
        assert_eq!(p.secrets, vec!["/config/redis_password"]);
        get(&es, "kong/plugins/key-auth@service=orders.json");
        get(&es, "kong/plugins/prometheus@global.json");
        get(
            &es,
            "kong/plugins/rate-limiting@service=orders,consumer=ignored-unknown.json",
        );
        let k = get(
            &es,
            "kong/keyauth_credentials/alice@33333333-0000-0000-0000-000000000001.json",
        );
        assert_eq!(k.secrets, vec!["/key"]);
        assert_eq!(k.subject.as_deref(), Some("kong:consumer=alice"));
        assert!(
            k.value.get("id").is_some(),
            "a credential's id is its identity"
        );
        let c = get(&es, "kong/consumers/alice.json");
        assert_eq!(c.personal, vec!["/username", "/custom_id"]);
        assert!(get(&es, "kong/acls/alice@admins.json")
            .value
            .get("id")
            .is_none());
        get(&es, "kong/targets/up@10.0.0.1:80.json");
        let cert = get(
            &es,
            "kong/certificates/55555555-0000-0000-0000-000000000001.json",
        );
        assert_eq!(cert.secrets, vec!["/key"]);
        assert_eq!(
            get(&es, "kong/snis/api.example.com.json").value["certificate"],
            cert.key
        );
    }

    #[test]
    fn deck_round_trips_through_export() {
        let es = entities();
        let pairs: Vec<(String, Value)> = es
            .iter()
            .map(|e| (e.kind.clone(), e.value.clone()))
            .collect();
        let deck = to_deck(&pairs);
        let again = from_deck(&deck, &[]).unwrap();
        let paths = |v: &[Entity]| {
            v.iter()
                .map(|e| (e.path.clone(), e.value.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(paths(&again), paths(&es));
    }

    #[test]
    fn an_entity_keyed_by_its_id_keeps_it() {
        // No usable name (absent, empty or not text): the id is the key, and the export needs it.
        let doc = json!({
            "_format_version": "3.0",
            "consumers": [{"id": "c1", "tags": ["x"]}, {"id": "c2", "username": ""}],
            "routes": [{"id": "r1", "name": "", "paths": ["/"]}],
            "upstreams": [{"name": "up", "targets": [{"id": "t1", "target": ""}]}]
        });
        let es = entities_of(&doc);
        assert_eq!(es["kong/consumers/c1.json"].1["id"], "c1");
        assert_eq!(es["kong/consumers/c2.json"].1["id"], "c2");
        assert_eq!(es["kong/routes/r1.json"].1["id"], "r1");
        assert_eq!(es["kong/targets/up@t1.json"].1["id"], "t1");
        assert_eq!(entities_of(&to_deck(&pairs(&es))), es);
    }

    #[test]
    fn anonymous_credentials_are_numbered_per_consumer() {
        // `a@b`'s credentials are not `a`'s, though its file names start the same.
        let doc = json!({"consumers": [
            {"username": "a@b", "basicauth_credentials": [{"password": "x"}]},
            {"username": "a", "basicauth_credentials": [{"password": "y"}]}
        ]});
        let es = entities_of(&doc);
        assert!(
            es.contains_key("kong/basicauth_credentials/a@b@%231.json"),
            "{es:?}"
        );
        assert!(
            es.contains_key("kong/basicauth_credentials/a@%231.json"),
            "{es:?}"
        );
    }

    #[test]
    fn each_consumer_group_lists_its_own_members() {
        let doc = json!({
            "consumer_groups": [
                {"name": "gold", "plugins": [{"name": "rate-limiting", "config": {"minute": 5}}]},
                {"name": "free", "consumers": [{"username": "carol"}]}
            ],
            "consumers": [
                {"username": "alice", "groups": [{"name": "gold"}]},
                {"username": "bob", "groups": [{"name": "free"}]}
            ]
        });
        let es = from_deck(&doc, &[]).unwrap();
        assert_eq!(
            get(&es, "kong/consumer_groups/gold.json").value["consumers"],
            json!(["alice"])
        );
        assert_eq!(
            get(&es, "kong/consumer_groups/free.json").value["consumers"],
            json!(["bob", "carol"])
        );
        let p = get(&es, "kong/plugins/rate-limiting@consumer_group=gold.json");
        assert!(p.value.get("consumers").is_none(), "{:?}", p.value);
    }

    #[test]
    fn membership_in_a_group_outside_the_capture_stays_on_the_consumer() {
        // A group another decK file manages (found through lookup tags), and one --select-tag
        // leaves out: neither is lost, and an export writes both back.
        let doc = json!({
            "consumer_groups": [
                {"name": "gold", "tags": ["t"]},
                {"name": "silver"}
            ],
            "consumers": [
                {"username": "alice", "tags": ["t"], "groups": [{"name": "gold"}, {"name": "elsewhere"}, {"name": "silver"}]}
            ]
        });
        let es = from_deck(&doc, &["t".to_string()]).unwrap();
        assert_eq!(
            get(&es, "kong/consumers/alice.json").value["groups"],
            json!(["elsewhere", "silver"])
        );
        assert_eq!(
            get(&es, "kong/consumer_groups/gold.json").value["consumers"],
            json!(["alice"])
        );
        let all = from_deck(&doc, &[]).unwrap();
        assert_eq!(
            get(&all, "kong/consumers/alice.json").value["groups"],
            json!(["elsewhere"])
        );
        let pairs: Vec<(String, Value)> = es
            .iter()
            .map(|e| (e.kind.clone(), e.value.clone()))
            .collect();
        let deck = to_deck(&pairs);
        let mut names: Vec<&str> = deck["consumers"][0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["name"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["elsewhere", "gold", "silver"]);
        let again = from_deck(&deck, &["t".to_string()]).unwrap();
        assert_eq!(again[1..], es[1..], "all but the decK metadata");
    }

    #[test]
    fn export_keeps_entities_whose_parent_is_not_in_the_snapshot() {
        // What a capture with --select-tag keeps when a route, a credential or a group member is
        // tagged but its service or consumer is not.
        let doc = json!({
            "_format_version": "3.0",
            "routes": [{"name": "r", "service": "ghost", "tags": ["t"], "paths": ["/r"]}],
            "keyauth_credentials": [{"id": "k1", "key": "s3cret", "consumer": "nobody"}],
            "consumer_groups": [{"name": "g", "consumers": [{"username": "absent"}]}]
        });
        let es = entities_of(&doc);
        let again = entities_of(&to_deck(&pairs(&es)));
        assert_eq!(again, es);
        assert_eq!(
            again["kong/routes/r.json"].1["service"],
            json!("ghost"),
            "{again:?}"
        );
        assert!(again.contains_key("kong/keyauth_credentials/nobody@k1.json"));
        assert_eq!(
            again["kong/consumer_groups/g.json"].1["consumers"],
            json!(["absent"])
        );
    }

    fn pairs(es: &BTreeMap<String, (String, Value)>) -> Vec<(String, Value)> {
        es.values().cloned().collect()
    }

    fn entities_of(doc: &Value) -> BTreeMap<String, (String, Value)> {
        from_deck(doc, &[])
            .unwrap()
            .into_iter()
            .map(|e| (e.path, (e.kind, e.value)))
            .collect()
    }

    #[test]
    fn admin_ids_key_a_listing_by_document_path() {
        let listing = json!({
            "services": [{"id": "s1", "name": "orders", "host": "o"}],
            "routes": [{"id": "r1", "name": "get", "service": {"id": "s1"}}],
            "plugins": [
                {"id": "p1", "name": "key-auth", "service": {"id": "s1"}, "route": null},
                {"id": "p2", "name": "prometheus"}
            ],
            "consumers": [{"id": "c1", "username": "alice"}],
            "acls": [{"id": "a1", "group": "g", "consumer": {"id": "c1"}}],
            "upstreams": [{"id": "u1", "name": "up", "targets": [{"id": "t1", "target": "10.0.0.1:80"}]}]
        });
        let ids = admin_ids(&listing).unwrap();
        let want: BTreeMap<String, String> = [
            ("kong/services/orders.json", "s1"),
            ("kong/routes/get.json", "r1"),
            ("kong/plugins/key-auth@service=orders.json", "p1"),
            ("kong/plugins/prometheus@global.json", "p2"),
            ("kong/consumers/alice.json", "c1"),
            ("kong/acls/alice@g.json", "a1"),
            ("kong/upstreams/up.json", "u1"),
            ("kong/targets/up@10.0.0.1:80.json", "t1"),
        ]
        .into_iter()
        .map(|(p, i)| (p.to_string(), i.to_string()))
        .collect();
        assert_eq!(ids, want);
    }

    proptest::proptest! {
        #[test]
        fn scope_reads_back(
            ws in proptest::option::of("[a-zA-Z0-9._~-]{1,12}"),
            tags in proptest::collection::vec(
                proptest::prop_oneof!["[ab; ]{1,8}", "[^,/]{1,10}"],
                0..4,
            ),
        ) {
            let s = scope(ws.as_deref(), &tags).unwrap();
            proptest::prop_assert_eq!(scope_parts(s.as_deref()), (ws, tags));
        }
    }

    #[test]
    fn scope_refuses_what_kong_refuses_and_reads_earlier_scopes() {
        for w in ["", "a b", "a;b", "a/b"] {
            let e = scope(Some(w), &[]).unwrap_err();
            assert!(e.contains("workspace name"), "{w:?}: {e}");
        }
        for t in ["", "a,b", "a/b"] {
            let e = scope(None, &[t.to_string()]).unwrap_err();
            assert!(e.contains("tag"), "{t:?}: {e}");
        }
        // What captures before `scope` existed recorded.
        assert_eq!(scope_parts(Some("workspace w")), (Some("w".into()), vec![]));
        assert_eq!(
            scope_parts(Some("workspace w; select tags a,b")),
            (Some("w".into()), vec!["a".into(), "b".into()])
        );
        assert_eq!(scope_parts(Some("select tags a")), (None, vec!["a".into()]));
        assert_eq!(scope_parts(None), (None, vec![]));
    }

    #[test]
    fn select_tags_keep_only_tagged_entities() {
        let doc = canonical::parse_json_or_yaml(DECK.as_bytes()).unwrap();
        let es = from_deck(&doc, &["a".into()]).unwrap();
        assert!(es.iter().any(|e| e.path == "kong/services/orders.json"));
        assert!(!es.iter().any(|e| e.path == "kong/consumers/alice.json"));
    }

    #[test]
    fn malformed_entities_are_named() {
        let doc = json!({"services": [{"host": "x"}]});
        assert!(from_deck(&doc, &[]).unwrap_err().contains("service"));
        let doc = json!({"consumers": [{"username": "a", "acls": ["admins"]}]});
        assert!(from_deck(&doc, &[])
            .unwrap_err()
            .contains("acls entry of consumer a"));
        assert!(from_deck(&json!([1]), &[]).is_err());
    }
}
