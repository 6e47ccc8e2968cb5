//! Restoring Kong through its Admin API.
//!
//! Kong without a database (the Admin API root says `database: off`) is restored atomically: the
//! declarative configuration is rebuilt from the snapshot's entities ([`to_deck`]) and loaded with one
//! `POST /config`, which Kong applies completely or not at all.
//!
//! Kong with a database is restored entity by entity in dependency order, as decK syncs: deletes
//! first, children before parents, then creates and updates, parents before children (the ranks of
//! [`KongTarget::rank`]). Creates and updates are upserts (`PUT /{collection}/{name or id}`), so that
//! a resumed restore can repeat a step that may or may not have taken effect. Foreign keys are sent
//! as `{"id": ...}`, resolved from the live gateway's listing or from the entity just written.
//!
//! Kong refuses to delete a service that routes still use (and a certificate that SNIs still use).
//! When a surviving entity moves off a parent the restore deletes (a route whose service was renamed),
//! that delete waits until the creates and updates are done.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{json, Value};

use super::{Applied, Op, Plan, Rewrite, Step, Target};
use crate::error::{Error, Result};
use crate::gateway::canonical::{self, str_field};
use crate::gateway::http::{Answer, Client};
use crate::gateway::kong::{admin_client, admin_ids, to_deck, ADMIN_LISTING, DBLESS_CONFIG};
use crate::gateway::{Capture, Entity, GatewayOptions};

/// Consumer credential kinds: entity kind and Admin API collection.
const CREDENTIALS: &[(&str, &str)] = &[
    ("keyauth_credential", "key-auths"),
    ("basicauth_credential", "basic-auths"),
    ("hmacauth_credential", "hmac-auths"),
    ("jwt_secret", "jwts"),
    ("oauth2_credential", "oauth2"),
    ("acl", "acls"),
    ("mtls_auth_credential", "mtls-auths"),
];

/// Entity kinds whose Admin API collection differs from the folder name, or whose URL is a unique
/// field (Kong's `endpoint_key`): kind, collection, endpoint key.
const COLLECTIONS: &[(&str, &str, Option<&str>)] = &[
    ("service", "services", Some("name")),
    ("route", "routes", Some("name")),
    ("consumer", "consumers", Some("username")),
    ("consumer_group", "consumer_groups", Some("name")),
    ("upstream", "upstreams", Some("name")),
    ("certificate", "certificates", None),
    ("ca_certificate", "ca_certificates", None),
    ("sni", "snis", Some("name")),
    ("vault", "vaults", Some("prefix")),
    ("key_set", "key-sets", Some("name")),
    ("key", "keys", Some("name")),
    ("plugin", "plugins", None),
];

/// References by name in canonical entities: kind (`*` for every credential), field, parent kind.
const NAME_REFS: &[(&str, &str, &str)] = &[
    ("route", "service", "service"),
    ("sni", "certificate", "certificate"),
    ("key", "set", "key_set"),
    ("target", "upstream", "upstream"),
    ("plugin", "service", "service"),
    ("plugin", "route", "route"),
    ("plugin", "consumer", "consumer"),
    ("plugin", "consumer_group", "consumer_group"),
    ("*", "consumer", "consumer"),
];

/// References by id (`{"id": ...}`), kept as the Admin API gives them: field and parent kind.
const ID_REFS: &[(&str, &str)] = &[
    ("client_certificate", "certificate"),
    ("ca_certificate", "ca_certificate"),
];

/// Top-level decK fields that Kong's declarative loader does not take.
const DECK_ONLY: &[&str] = &["_info", "_konnect", "_workspace"];

/// A Kong Admin API to restore into.
pub struct KongTarget {
    opts: GatewayOptions,
    endpoint: String,
}

impl KongTarget {
    /// The Kong at `opts.endpoint` (default `http://localhost:8001`), in `opts.workspace`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `--file` is given: a restore needs a live Admin API.
    pub fn new(opts: &GatewayOptions) -> Result<Self> {
        let endpoint = super::admin_url(
            opts,
            crate::gateway::kong::DEFAULT_ENDPOINT,
            "Kong",
            "to write a decK file, use `gatevault export --format deck`",
        )?;
        let mut opts = opts.clone();
        opts.endpoint = Some(endpoint.clone());
        Ok(Self { opts, endpoint })
    }

    /// `/<workspace>` or nothing.
    fn prefix(&self) -> String {
        self.opts
            .workspace
            .as_deref()
            .map_or(String::new(), |w| format!("/{}", segment(w)))
    }

    fn client(&self, live: &Capture) -> Client {
        admin_client(&self.endpoint, live.source.describe())
    }

    /// DB-less: one `POST /config` with the whole declarative configuration.
    fn apply_config(
        &self,
        desired: &Capture,
        live: &Capture,
        plan: &Plan,
        done: &mut dyn FnMut(&Step),
    ) -> Result<Applied> {
        let pairs: Vec<(String, Value)> = desired
            .entities
            .iter()
            .filter(|e| e.text.is_none())
            .map(|e| (e.kind.clone(), e.value.clone()))
            .collect();
        let mut doc = to_deck(&pairs);
        canonical::drop_fields(&mut doc, DECK_ONLY);
        let text = serde_json::to_string(&doc).expect("a config serializes");
        let path = format!("{}/config", self.prefix());
        let gw = live.source.describe();
        let secrets: Vec<String> = desired.entities.iter().flat_map(secret_values).collect();
        // Replacing the whole configuration twice is replacing it once: safe to retry.
        match self
            .client(live)
            .send("POST", &path, Some(&json!({ "config": text })), true)
        {
            Ok(Answer::Done(_)) => {}
            Ok(Answer::Refused { status, message }) => {
                return Err(Error::gateway(
                    gw,
                    format!(
                        "POST {path} (the whole declarative configuration): HTTP {status} {}; nothing was changed (Kong loads a declarative configuration completely or not at all): fix the entity Kong names in the snapshot's export (`gatevault export SNAPSHOT --format deck`)",
                        mask(&message, &secrets)
                    ),
                ))
            }
            Err(e) => {
                return Err(Error::gateway(
                    gw,
                    format!(
                        "POST {path} (the whole declarative configuration): the Admin API stopped answering ({}); the configuration may or may not have been loaded: once Kong answers again, run the restore again",
                        reason(&e)
                    ),
                ))
            }
        }
        for s in &plan.steps {
            done(s);
        }
        let mut notes = vec![];
        if desired
            .entities
            .iter()
            .any(|e| e.kind == "basicauth_credential")
        {
            notes.push(BASIC_AUTH_NOTE.into());
        }
        Ok(Applied {
            method: format!("POST {path} (DB-less, atomic)"),
            steps: plan.steps.iter().map(Step::describe).collect(),
            notes,
        })
    }

    /// With a database: entity by entity.
    fn apply_entities(
        &self,
        desired: &Capture,
        live: &Capture,
        plan: &Plan,
        done: &mut dyn FnMut(&Step),
    ) -> Result<Applied> {
        let gw = live.source.describe();
        let listing = live
            .raw
            .get(ADMIN_LISTING)
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .ok_or_else(|| {
                Error::gateway(
                    gw.clone(),
                    "the capture of the live gateway has no Admin API listing, so entities cannot be addressed by id: run the restore again",
                )
            })?;
        let ids = admin_ids(&listing).map_err(|why| {
            Error::gateway(
                gw.clone(),
                format!("the live gateway's listing cannot be read: {why}"),
            )
        })?;
        let mut a = Applier {
            client: self.client(live),
            prefix: self.prefix(),
            gateway: gw,
            ids: ids.into_iter().collect(),
            desired: by_path(desired),
            live: by_path(live),
        };
        let (order, deferred) = schedule(&plan.steps, live, desired);
        let mut steps = vec![];
        for s in order {
            a.step(s)?;
            done(s);
            steps.push(s.describe());
        }
        let mut notes: Vec<String> = deferred
            .iter()
            .map(|s| {
                format!(
                    "{} ran after the entities that moved off it were updated (Kong refuses to delete a parent that is still in use)",
                    s.describe()
                )
            })
            .collect();
        if plan
            .steps
            .iter()
            .any(|s| s.kind == "basicauth_credential" && s.op != Op::Delete)
        {
            notes.push(BASIC_AUTH_NOTE.into());
        }
        Ok(Applied {
            method: "entity by entity through the Admin API (PUT upserts, dependency order)".into(),
            steps,
            notes,
        })
    }
}

const BASIC_AUTH_NOTE: &str = "basic-auth passwords: Kong stores them hashed and a capture reads the hash; a restored basic-auth credential has that hash as its password, so set its password again";

impl Target for KongTarget {
    fn kind(&self) -> &str {
        "kong"
    }

    fn capture(&self) -> Result<Capture> {
        crate::gateway::kong::capture(&self.opts)
    }

    fn schedule(&self, steps: &mut Vec<Step>, live: &Capture, desired: &Capture) {
        let (order, _) = schedule(steps, live, desired);
        *steps = order.into_iter().cloned().collect();
    }

    fn rank(&self, kind: &str) -> u32 {
        match kind {
            "deck" => 0,
            "certificate" => 1,
            "ca_certificate" => 2,
            "sni" => 3,
            "vault" => 4,
            "key_set" => 5,
            "key" => 6,
            "consumer" => 7,
            "consumer_group" => 8,
            k if credential(k).is_some() => 9,
            "upstream" => 10,
            "target" => 11,
            "service" => 12,
            "route" => 13,
            "plugin" => 14,
            _ => 15,
        }
    }

    fn adapt(&self, desired: &mut Capture, live: &Capture) -> Result<Vec<Rewrite>> {
        let mut out = vec![];
        let deck_of = |c: &Capture| c.entities.iter().position(|e| e.kind == "deck");
        // A capture limited to select tags is restored only with the same tags, so that the
        // entities outside them (which the snapshot does not hold) are left alone, as decK does.
        let (_, tags) = crate::gateway::kong::scope_parts(desired.source.scope.as_deref());
        let (mut want, mut have) = (tags.clone(), self.opts.select_tags.clone());
        want.sort();
        have.sort();
        if want != have {
            return Err(Error::InvalidInput(match tags.is_empty() {
                true => "this snapshot holds the whole gateway: restore it without --select-tag".into(),
                false => format!(
                    "this snapshot holds only the entities tagged {}: restore it with --select-tag {} (without them, everything else on the gateway would be deleted)",
                    tags.join(","),
                    tags.join(" --select-tag ")
                ),
            }));
        }
        let workspace = |c: &Capture| {
            crate::gateway::kong::scope_parts(c.source.scope.as_deref())
                .0
                .or_else(|| {
                    deck_of(c).and_then(|i| {
                        str_field(&c.entities[i].value, "_workspace").map(str::to_string)
                    })
                })
        };
        let from = workspace(desired).unwrap_or_else(|| "default".into());
        let to = self
            .opts
            .workspace
            .clone()
            .unwrap_or_else(|| "default".into());
        if from != to {
            out.push(Rewrite {
                what: "Kong workspace".into(),
                from: from.clone(),
                to: to.clone(),
                count: desired.entities.iter().filter(|e| e.kind != "deck").count(),
            });
            // Kong's ids are unique across workspaces: a copy into another workspace gets its own,
            // derived from the old ones, so that restoring the copy again finds them.
            let n = rewrite_ids(desired, &to);
            if n > 0 {
                out.push(Rewrite {
                    what: "Kong ids kept in the snapshot (certificates, credentials), derived anew for the workspace".into(),
                    from: format!("the ids of workspace {from}"),
                    to: format!("ids of workspace {to}"),
                    count: n,
                });
            }
        }
        // The decK metadata (`_format_version`, `_workspace`, `_info`) describes the capture, not
        // the gateway: keep the target's own.
        if let Some(i) = deck_of(desired) {
            desired.entities.remove(i);
        }
        if let Some(i) = deck_of(live) {
            desired.entities.push(live.entities[i].clone());
        }
        Ok(out)
    }

    fn apply(
        &self,
        desired: &Capture,
        live: &Capture,
        plan: &Plan,
        done: &mut dyn FnMut(&Step),
    ) -> Result<Applied> {
        if live.raw.contains_key(DBLESS_CONFIG) {
            self.apply_config(desired, live, plan, done)
        } else {
            self.apply_entities(desired, live, plan, done)
        }
    }
}

/// Replaces every id the entities of `c` keep (their `id` field) by one derived from it and
/// `workspace`, in values, keys and paths; returns how many ids were replaced.
fn rewrite_ids(c: &mut Capture, workspace: &str) -> usize {
    let ids: BTreeSet<String> = c
        .entities
        .iter()
        .filter_map(|e| str_field(&e.value, "id").map(str::to_string))
        .collect();
    for old in &ids {
        let new = derived_id(workspace, old);
        for e in &mut c.entities {
            super::plan::replace_in(&mut e.value, old, &new);
            if e.key.contains(old.as_str()) {
                e.key = e.key.replace(old.as_str(), &new);
                let dir = e.path.rsplit_once('/').map_or("kong", |(d, _)| d);
                e.path = format!("{dir}/{}.json", canonical::file_name(&e.key));
            }
        }
    }
    ids.len()
}

/// A UUID for `id` in `workspace`: the same every time, different per workspace. Laid out as a
/// version 4 UUID, since some clients accept only those.
fn derived_id(workspace: &str, id: &str) -> String {
    let h = blake3::hash(format!("gatevault kong id\0{workspace}\0{id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    uuid_text(b)
}

/// The text form of a UUID with the version 4 and variant bits set.
fn uuid_text(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The Admin API collection of a credential kind.
fn credential(kind: &str) -> Option<&'static str> {
    CREDENTIALS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, c)| *c)
}

/// The Admin API collection and endpoint key of an entity kind (targets are nested: `None`).
fn collection(kind: &str) -> Option<(&'static str, Option<&'static str>)> {
    COLLECTIONS
        .iter()
        .find(|(k, ..)| *k == kind)
        .map(|(_, c, f)| (*c, *f))
        .or_else(|| credential(kind).map(|c| (c, None)))
}

/// Document path of the entity of `kind` keyed `key` (every Kong folder is `kong/<kind>s`).
fn path_of(kind: &str, key: &str) -> String {
    format!("kong/{kind}s/{}.json", canonical::file_name(key))
}

/// The parents an entity refers to, as (kind, key).
fn parents(e: &Entity) -> Vec<(&'static str, String)> {
    let cred = credential(&e.kind).is_some();
    let mut out = vec![];
    for (kind, field, parent) in NAME_REFS {
        if *kind == e.kind || (*kind == "*" && cred) {
            if let Some(k) = str_field(&e.value, field) {
                out.push((*parent, k.to_string()));
            }
        }
    }
    for (field, parent) in ID_REFS {
        if let Some(id) = e.value.get(field).and_then(|r| str_field(r, "id")) {
            out.push((*parent, id.to_string()));
        }
    }
    out
}

/// The order to run the plan's steps in, and the deletes that were moved to the end: a delete of a
/// parent that a surviving entity (one the snapshot keeps) still refers to on the live gateway waits
/// until the creates and updates have moved that entity off it.
fn schedule<'p>(
    steps: &'p [Step],
    live: &Capture,
    desired: &Capture,
) -> (Vec<&'p Step>, Vec<&'p Step>) {
    let kept: HashSet<&str> = desired.entities.iter().map(|e| e.path.as_str()).collect();
    let in_use: HashSet<String> = live
        .entities
        .iter()
        .filter(|e| kept.contains(e.path.as_str()))
        .flat_map(|e| parents(e).into_iter().map(|(k, key)| path_of(k, &key)))
        .collect();
    let (deferred, now): (Vec<&Step>, Vec<&Step>) = steps
        .iter()
        .partition(|s| s.op == Op::Delete && in_use.contains(&s.path));
    let mut order = now;
    order.extend(deferred.iter().copied());
    (order, deferred)
}

fn by_path(c: &Capture) -> BTreeMap<String, Entity> {
    c.entities
        .iter()
        .map(|e| (e.path.clone(), e.clone()))
        .collect()
}

/// The string values of an entity's secret fields.
fn secret_values(e: &Entity) -> Vec<String> {
    e.secrets
        .iter()
        .filter_map(|p| e.value.pointer(p))
        .filter_map(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Null | Value::Bool(_) => None,
            v => Some(v.to_string()),
        })
        .collect()
}

/// `message` with every secret value replaced by the placeholder (Kong quotes conflicting values,
/// a key-auth key among them).
fn mask(message: &str, secrets: &[String]) -> String {
    let mut m = message.to_string();
    let mut secrets: Vec<&String> = secrets.iter().collect();
    // Longest first, so that a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        m = m.replace(s.as_str(), crate::gateway::SECRET_PLACEHOLDER);
    }
    m
}

/// The reason of a gateway error, without the gateway's name (the caller names it).
fn reason(e: &Error) -> String {
    match e {
        Error::Gateway { reason, .. } => reason.clone(),
        e => e.to_string(),
    }
}

/// A URL path segment: unreserved characters as they are, the rest percent-encoded.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A random (version 4) UUID, for entities Kong can only address by id.
fn new_id() -> String {
    uuid_text(rand::random())
}

/// The state of an entity-by-entity restore.
struct Applier {
    client: Client,
    /// `/<workspace>` or nothing.
    prefix: String,
    /// The gateway, for errors.
    gateway: String,
    /// Document path to Admin API id: the live gateway's, then what this restore wrote.
    ids: HashMap<String, String>,
    desired: BTreeMap<String, Entity>,
    live: BTreeMap<String, Entity>,
}

/// Why a step failed, before it is worded.
enum Failure {
    /// The gateway answered with this status.
    Refused(u16, String),
    /// The gateway could not be reached, or refused the credentials.
    Lost(Error),
    /// Something the restore itself found (a missing parent).
    Other(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Lost(e)
    }
}

impl Applier {
    fn step(&mut self, s: &Step) -> Result<()> {
        if s.kind == "deck" {
            return Ok(());
        }
        let source = if s.op == Op::Delete {
            &self.live
        } else {
            &self.desired
        };
        let Some(e) = source.get(&s.path).cloned() else {
            return Err(Error::gateway(
                self.gateway.clone(),
                format!(
                    "{} ({}): the entity is missing from the capture it was planned from; run the restore again",
                    s.describe(),
                    s.path
                ),
            ));
        };
        let result = if s.op == Op::Delete {
            self.delete(&e)
        } else {
            self.upsert(s.op, &e)
        };
        result.map_err(|f| self.word(s, &e, f))
    }

    /// The error for a failed step: `<step> (<path>): <why>; <next step>`, secrets masked.
    fn word(&self, s: &Step, e: &Entity, f: Failure) -> Error {
        let secrets = secret_values(e);
        let head = format!("{} ({})", s.describe(), s.path);
        let why = match f {
            Failure::Refused(409, m) => format!(
                "HTTP 409 {}; another entity on the gateway holds a value that must be unique (a name, username or key): rename or delete that entity on the gateway",
                mask(&m, &secrets)
            ),
            Failure::Refused(400, m) if s.op == Op::Delete => format!(
                "HTTP 400 {}; other entities on the gateway still use it: delete or move them",
                mask(&m, &secrets)
            ),
            Failure::Refused(400, m) => format!(
                "HTTP 400 {}; Kong refused the entity as invalid or as pointing at an entity that does not exist: check it against this Kong version's schema",
                mask(&m, &secrets)
            ),
            Failure::Refused(code, m) => format!("HTTP {code} {}", mask(&m, &secrets)),
            Failure::Lost(err) => format!(
                "the Admin API did not answer ({}); the step may or may not have taken effect, and a resumed restore plans it again from what the gateway then holds",
                mask(&reason(&err), &secrets)
            ),
            Failure::Other(m) => m,
        };
        Error::gateway(self.gateway.clone(), format!("{head}: {why}"))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::result::Result<Value, Failure> {
        let idempotent = matches!(method, "PUT" | "DELETE");
        match self.client.send(method, path, body, idempotent)? {
            Answer::Done(b) => Ok(serde_json::from_slice(&b).unwrap_or(Value::Null)),
            Answer::Refused { status, message } => Err(Failure::Refused(status, message)),
        }
    }

    /// The Admin API id of the entity of `kind` keyed `key`: known, or asked of the gateway.
    fn resolve(&mut self, kind: &str, key: &str) -> std::result::Result<String, Failure> {
        let path = path_of(kind, key);
        if let Some(id) = self.ids.get(&path) {
            return Ok(id.clone());
        }
        let missing = || {
            Failure::Other(format!(
                "it refers to {kind} {key}, which is neither on the gateway nor restored before it; restore a snapshot that holds {kind} {key}"
            ))
        };
        let (coll, _) = collection(kind).ok_or_else(missing)?;
        let url = format!("{}/{coll}/{}", self.prefix, segment(key));
        let found = self.client.get_json(&url)?;
        let id = found
            .as_ref()
            .and_then(|v| str_field(v, "id"))
            .ok_or_else(missing)?
            .to_string();
        self.ids.insert(path, id.clone());
        Ok(id)
    }

    /// The URL key of an entity: its unique field, else its id (kept, live or new).
    fn url_key(&self, e: &Entity, field: Option<&str>) -> Option<String> {
        field
            .and_then(|f| str_field(&e.value, f))
            .or_else(|| str_field(&e.value, "id"))
            .map(str::to_string)
            .or_else(|| self.ids.get(&e.path).cloned())
    }

    /// The body Kong takes for `e`: references by name become `{"id": ...}`; the fields the URL
    /// carries go.
    fn body(&mut self, e: &Entity) -> std::result::Result<Value, Failure> {
        let mut v = e.value.clone();
        let cred = credential(&e.kind).is_some();
        for (kind, field, parent) in NAME_REFS {
            if *kind != e.kind && !(*kind == "*" && cred) {
                continue;
            }
            let Some(name) = str_field(&v, field).map(str::to_string) else {
                continue;
            };
            let id = self.resolve(parent, &name)?;
            v[*field] = json!({ "id": id });
        }
        let drop: &[&str] = match e.kind.as_str() {
            "target" => &["id", "upstream"],
            "consumer_group" => &["id", "consumers"],
            // Membership in groups outside the snapshot (`docs/recovery.md`, limits).
            "consumer" => &["id", "groups"],
            _ => &["id"],
        };
        canonical::drop_fields(&mut v, drop);
        Ok(v)
    }

    fn upsert(&mut self, op: Op, e: &Entity) -> std::result::Result<(), Failure> {
        let body = self.body(e)?;
        let answer = if e.kind == "target" {
            let (upstream, target) = target_of(e)?;
            let base = format!("{}/upstreams/{}/targets", self.prefix, segment(&upstream));
            // Kong 3 updates a target in place (PUT), but creates one only by POST.
            if op == Op::Create {
                let mut b = body;
                b["target"] = json!(target);
                self.send("POST", &base, Some(&b))?
            } else {
                self.send("PUT", &format!("{base}/{}", segment(&target)), Some(&body))?
            }
        } else {
            let (coll, field) = collection(&e.kind).ok_or_else(|| {
                Failure::Other(format!(
                    "gatevault does not know how to write a Kong {} entity: restore it by hand",
                    e.kind
                ))
            })?;
            let key = self.url_key(e, field).unwrap_or_else(new_id);
            let url = format!("{}/{coll}/{}", self.prefix, segment(&key));
            self.send("PUT", &url, Some(&body))?
        };
        if let Some(id) = str_field(&answer, "id") {
            self.ids.insert(e.path.clone(), id.to_string());
        }
        if e.kind == "consumer_group" {
            self.members(e)?;
        }
        Ok(())
    }

    fn delete(&mut self, e: &Entity) -> std::result::Result<(), Failure> {
        let url = if e.kind == "target" {
            let (upstream, target) = target_of(e)?;
            format!(
                "{}/upstreams/{}/targets/{}",
                self.prefix,
                segment(&upstream),
                segment(&target)
            )
        } else {
            let (coll, field) = collection(&e.kind).ok_or_else(|| {
                Failure::Other(format!(
                    "gatevault does not know how to delete a Kong {} entity: delete it by hand",
                    e.kind
                ))
            })?;
            let key = self.url_key(e, field).ok_or_else(|| {
                Failure::Other(
                    "its Admin API id is not in the live gateway's listing; run the restore again"
                        .into(),
                )
            })?;
            format!("{}/{coll}/{}", self.prefix, segment(&key))
        };
        match self.send("DELETE", &url, None) {
            // Already gone (a cascade from its parent, or a repeated step): what was wanted.
            Ok(_) | Err(Failure::Refused(404, _)) => {
                self.ids.remove(&e.path);
                Ok(())
            }
            Err(f) => Err(f),
        }
    }

    /// Makes the members of a consumer group those the snapshot lists.
    fn members(&mut self, e: &Entity) -> std::result::Result<(), Failure> {
        let group = self
            .url_key(e, Some("name"))
            .ok_or_else(|| Failure::Other("the consumer group has no name".into()))?;
        let base = format!(
            "{}/consumer_groups/{}/consumers",
            self.prefix,
            segment(&group)
        );
        let want: BTreeSet<String> = e
            .value
            .get("consumers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        let mut have = BTreeSet::new();
        let mut next = Some(format!("{base}?size=1000"));
        while let Some(page) = next.take() {
            let Some(v) = self.client.get_json(&page)? else {
                break;
            };
            // Kong answers `{"consumers": [...]}`; a paged `{"data": [...]}` is read too.
            for c in ["consumers", "data"]
                .iter()
                .filter_map(|f| v.get(*f).and_then(Value::as_array))
                .flatten()
            {
                if let Some(n) = str_field(c, "username").or_else(|| str_field(c, "id")) {
                    have.insert(n.to_string());
                }
            }
            next = str_field(&v, "next").map(|n| {
                if n.starts_with(&format!("{}/", self.prefix)) || self.prefix.is_empty() {
                    n.to_string()
                } else {
                    format!("{}{n}", self.prefix)
                }
            });
        }
        for c in want.difference(&have) {
            match self.send("POST", &base, Some(&json!({ "consumer": c }))) {
                // Already a member (the first attempt took effect).
                Ok(_) | Err(Failure::Refused(409, _)) => {}
                Err(f) => return Err(f),
            }
        }
        for c in have.difference(&want) {
            match self.send("DELETE", &format!("{base}/{}", segment(c)), None) {
                Ok(_) | Err(Failure::Refused(404, _)) => {}
                Err(f) => return Err(f),
            }
        }
        Ok(())
    }
}

/// A target's upstream and address.
fn target_of(e: &Entity) -> std::result::Result<(String, String), Failure> {
    let (upstream, target) = e
        .key
        .split_once('@')
        .ok_or_else(|| Failure::Other("the target's key is not <upstream>@<target>".into()))?;
    let upstream = str_field(&e.value, "upstream").unwrap_or(upstream);
    let target = str_field(&e.value, "target").unwrap_or(target);
    Ok((upstream.to_string(), target.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::Source;
    use crate::recovery::plan;

    fn cap(entities: Vec<Entity>) -> Capture {
        Capture {
            source: Source::new("kong", "http://k"),
            raw: BTreeMap::new(),
            entities,
        }
    }

    fn service(name: &str) -> Entity {
        Entity::new(
            "kong/services",
            "service",
            name,
            json!({"name": name, "host": "h"}),
        )
    }

    fn route(name: &str, service: &str) -> Entity {
        Entity::new(
            "kong/routes",
            "route",
            name,
            json!({"name": name, "service": service}),
        )
    }

    fn target() -> KongTarget {
        KongTarget::new(&GatewayOptions {
            kind: "kong".into(),
            endpoint: Some("127.0.0.1:8001".into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn ranks_follow_kong_dependencies() {
        let t = target();
        let order = [
            "certificate",
            "sni",
            "consumer",
            "consumer_group",
            "keyauth_credential",
            "upstream",
            "target",
            "service",
            "route",
            "plugin",
        ];
        for w in order.windows(2) {
            assert!(t.rank(w[0]) < t.rank(w[1]), "{} before {}", w[0], w[1]);
        }
        assert_eq!(t.rank("acl"), t.rank("jwt_secret"));
    }

    #[test]
    fn a_parent_still_used_by_a_moved_child_is_deleted_last() {
        // The service was renamed billing -> billing-v2 on the gateway; its route followed.
        let live = cap(vec![
            service("billing-v2"),
            route("billing-any", "billing-v2"),
            service("stray"),
            route("stray-route", "stray"),
        ]);
        let desired = cap(vec![service("billing"), route("billing-any", "billing")]);
        let t = target();
        let steps = plan::plan(&live, &desired, &|k| t.rank(k), false);
        let (order, deferred) = schedule(&steps, &live, &desired);
        let got: Vec<String> = order.iter().map(|s| s.describe()).collect();
        assert_eq!(
            got,
            [
                "delete route stray-route",
                "delete service stray",
                "create service billing",
                "update route billing-any",
                "delete service billing-v2",
            ]
        );
        assert_eq!(deferred.len(), 1);
    }

    #[test]
    fn secrets_are_masked_in_kong_messages() {
        let e = Entity::new(
            "kong/keyauth_credentials",
            "keyauth_credential",
            "alice@1",
            json!({"key": "k3y-value", "consumer": "alice"}),
        )
        .secret(&["/key"]);
        let m = mask(
            "UNIQUE violation detected on '{key=\"k3y-value\"}'",
            &secret_values(&e),
        );
        assert_eq!(m, "UNIQUE violation detected on '{key=\"<secret>\"}'");
    }

    #[test]
    fn a_copy_into_another_workspace_gets_derived_ids_everywhere() {
        let id = "6a0c1e8a-1f3e-4c55-8d2b-2f1a9c0e0001";
        let mut c = cap(vec![
            Entity::new(
                "kong/certificates",
                "certificate",
                id,
                json!({"id": id, "cert": "C"}),
            ),
            Entity::new(
                "kong/snis",
                "sni",
                "api.example.com",
                json!({"name": "api.example.com", "certificate": id}),
            ),
            service("orders"),
        ]);
        assert_eq!(rewrite_ids(&mut c, "staging"), 1);
        let new = derived_id("staging", id);
        assert_ne!(new, id);
        assert_eq!(new, derived_id("staging", id), "the same every time");
        assert_ne!(new, derived_id("other", id));
        assert_eq!(c.entities[0].path, format!("kong/certificates/{new}.json"));
        assert_eq!(c.entities[0].key, new);
        assert_eq!(c.entities[0].value["id"], json!(new));
        assert_eq!(c.entities[1].value["certificate"], json!(new));
        assert_eq!(c.entities[2].value, service("orders").value);
    }

    #[test]
    fn url_segments_and_ids_are_well_formed() {
        assert_eq!(segment("10.0.0.1:8080"), "10.0.0.1:8080");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_id());
    }

    #[test]
    fn workspaces_that_differ_are_a_rewrite_and_the_target_keeps_its_deck_metadata() {
        let mut t = target();
        t.opts.workspace = Some("staging".into());
        let mut desired = cap(vec![
            Entity::new("kong", "deck", "_deck", json!({"_format_version": "3.0"})),
            service("a"),
        ]);
        let mut live = cap(vec![Entity::new("kong", "deck", "_deck", json!({}))]);
        live.source.scope = Some("workspace staging".into());
        let w = t.adapt(&mut desired, &live).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(
            (w[0].from.as_str(), w[0].to.as_str()),
            ("default", "staging")
        );
        assert_eq!(w[0].count, 1);
        let deck = desired.entities.iter().find(|e| e.kind == "deck").unwrap();
        assert_eq!(deck.value, json!({}));
        t.opts.workspace = None;
        let mut same = cap(vec![service("a")]);
        assert!(t.adapt(&mut same, &cap(vec![])).unwrap().is_empty());
    }
}
