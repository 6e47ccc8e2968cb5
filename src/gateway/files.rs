//! Files: a folder (or one file) of exported gateway configuration, such as the output of the Azure
//! API Management APIOps extractor, Google Cloud Endpoints / API Gateway service configs, or an Envoy
//! config dump. Every file becomes one document under `files/`:
//!
//! - JSON files are stored canonical (keys sorted, lists as they are) at `files/<relative path>`;
//! - YAML files are stored as canonical JSON at `files/<relative path>.json` (`.json` appended, so
//!   that `a.yaml` and a sibling `a.json` stay apart and the original name stays visible), and
//!   their original bytes go to `raw/` (comments and layout included) unless they hold secrets;
//! - other files (and JSON or YAML that does not parse) are stored verbatim at `files/<relative
//!   path>`;
//! - an Envoy config dump (`{"configs": [{"@type": ...}]}`) is split into one document per resource
//!   at `files/<relative path without extension>/{listeners,clusters,routes,scoped-routes,secrets,
//!   endpoints}/<name>.json`, plus `bootstrap.json`.
//!
//! Hidden files and folders (`.git`) are skipped. Recognizers give entity kinds, keys and marks:
//! APIOps folders (`apis/<name>/apiInformation.json` ...), `type: google.api.Service` documents,
//! OpenAPI documents, Envoy bootstraps and config dumps; anything else is kind `file`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::canonical::{self, field_pointers, file_name};
use super::{Capture, Entity, GatewayOptions, Source};
use crate::error::{Error, Result};

/// Captures the folder or file `opts.file`.
///
/// # Errors
/// [`Error::InvalidInput`] without `--file`; [`Error::Gateway`] when it does not exist;
/// [`Error::Io`] when a file in it cannot be read.
pub fn capture(opts: &GatewayOptions) -> Result<Capture> {
    let root = opts.file.as_ref().ok_or_else(|| {
        Error::InvalidInput(
            "the files gateway needs the folder (or file) to back up: give it with --file".into(),
        )
    })?;
    let abs = if root.is_absolute() {
        root.clone()
    } else {
        std::env::current_dir().unwrap_or_default().join(root)
    };
    let source = Source::new("files", &format!("file:{}", abs.display()));
    let meta = std::fs::metadata(root).map_err(|e| {
        Error::gateway(
            source.describe(),
            format!(
                "cannot read {} ({e}): check the path given with --file",
                root.display()
            ),
        )
    })?;
    let mut list = vec![];
    if meta.is_dir() {
        walk(root, "", &mut list)?;
    } else {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        list.push((name, root.clone()));
    }
    let mut capture = Capture {
        source,
        raw: BTreeMap::new(),
        entities: vec![],
    };
    for (rel, path) in list {
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        classify(&mut capture, &rel, bytes);
    }
    for key in unrestorable(&capture) {
        tracing::warn!(
            "named value {key} is secret and was exported without its value: it cannot be restored from this backup (set it again after a restore, or keep it in Key Vault)"
        );
    }
    Ok(capture)
}

/// The entities a restore cannot bring back whole: APIM secret named values that the extractor
/// wrote without their value (and without a Key Vault reference). Their keys, sorted.
pub fn unrestorable(capture: &Capture) -> Vec<String> {
    let mut out: Vec<String> = capture
        .entities
        .iter()
        .filter(|e| e.kind == "named-value")
        .filter(|e| {
            let p = e.value.get("properties");
            let secret = p.and_then(|p| p.get("secret")) == Some(&Value::Bool(true));
            let has = |f: &str| p.and_then(|p| p.get(f)).is_some_and(|v| !v.is_null());
            secret && !has("value") && !has("keyVault")
        })
        .map(|e| e.key.clone())
        .collect();
    out.sort();
    out
}

/// Lists the files under `dir` (relative path with `/`, full path), sorted, hidden entries skipped,
/// symbolic links to folders not followed.
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = e
            .file_type()
            .map_err(|err| Error::io(format!("reading {}", e.path().display()), err))?;
        if ft.is_dir() {
            walk(&e.path(), &r, out)?;
        } else if ft.is_file() || (ft.is_symlink() && e.path().is_file()) {
            out.push((r, e.path()));
        }
    }
    Ok(())
}

/// Adds the entities (and raw copy) of one file, at `rel` (relative, `/`-separated) in the folder.
pub(crate) fn classify(capture: &mut Capture, rel: &str, bytes: Vec<u8>) {
    let ext = Path::new(rel)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let yaml = matches!(ext.as_str(), "yaml" | "yml");
    if ext == "json" || yaml {
        match canonical::parse_json_or_yaml(&bytes) {
            Ok(v) => {
                if is_envoy_dump(&v) {
                    let stem = rel.rsplit_once('.').map_or(rel, |(s, _)| s);
                    let resources = envoy_dump(stem, &v);
                    // A dump without a resource gatevault knows (empty lists, or the lists of
                    // another Envoy version) is kept whole, as any other document.
                    if !resources.is_empty() {
                        capture.entities.extend(resources);
                        return;
                    }
                }
                let path = if yaml {
                    format!("files/{rel}.json")
                } else {
                    format!("files/{rel}")
                };
                let e = recognize(rel, path, v);
                if yaml && e.secrets.is_empty() {
                    capture.raw.insert(rel.to_string(), bytes);
                }
                capture.entities.push(e);
                return;
            }
            Err(err) => {
                tracing::warn!("{rel} does not parse as {ext} ({err}): stored as it is");
            }
        }
    }
    let (kind, key) = apiops(rel).unwrap_or_else(|| (verbatim_kind(rel), rel.to_string()));
    let mut e = Entity::verbatim(&format!("files/{rel}"), &kind, &key, bytes);
    let text = String::from_utf8_lossy(e.text.as_deref().unwrap_or_default());
    if text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----") {
        e.secrets.push(String::new());
    }
    capture.entities.push(e);
}

// ---------------------------------------------------------------------------------------------
// APIOps

/// APIOps extractor folders and the entity kind of their items.
const APIOPS: &[(&str, &str)] = &[
    ("apis", "api"),
    ("operations", "operation"),
    ("namedValues", "named-value"),
    ("products", "product"),
    ("backends", "backend"),
    ("loggers", "logger"),
    ("gateways", "gateway"),
    ("subscriptions", "subscription"),
    ("versionSets", "version-set"),
    ("groups", "group"),
    ("tags", "tag"),
    ("diagnostics", "diagnostic"),
    ("policyFragments", "policy-fragment"),
    ("identityProviders", "identity-provider"),
    ("authorizationServers", "authorization-server"),
    ("users", "user"),
];

/// Kind and key of a file in an APIOps tree: `apis/orders/apiInformation.json` is (`api`,
/// `orders`); `apis/orders/operations/get/policy.xml` is (`operation-policy`, `orders/get`); a
/// top-level `policy.xml` is (`service-policy`, `service`).
fn apiops(rel: &str) -> Option<(String, String)> {
    let comps: Vec<&str> = rel.split('/').collect();
    let file = *comps.last()?;
    if comps.len() == 1 || !comps.iter().any(|c| APIOPS.iter().any(|(d, _)| d == c)) {
        return (file == "policy.xml").then(|| ("service-policy".into(), "service".into()));
    }
    let start = comps
        .iter()
        .position(|c| APIOPS.iter().any(|(d, _)| d == c))?;
    let dirs = &comps[start..comps.len() - 1];
    if dirs.len() < 2 || !dirs.len().is_multiple_of(2) {
        return None;
    }
    let mut names = vec![];
    let mut kind = "";
    for pair in dirs.chunks(2) {
        kind = APIOPS.iter().find(|(d, _)| *d == pair[0])?.1;
        names.push(pair[1]);
    }
    let key = names.join("/");
    let singular_camel = kind_camel(kind);
    let kind = if file == format!("{singular_camel}Information.json") {
        kind.to_string()
    } else if file == "policy.xml" {
        format!("{kind}-policy")
    } else if file.starts_with("specification.") && kind == "api" {
        "api-specification".into()
    } else {
        let stem = file.split('.').next().unwrap_or(file);
        format!("{kind}-{}", kebab(stem))
    };
    Some((kind, key))
}

/// `named-value` -> `namedValue`.
fn kind_camel(kind: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in kind.chars() {
        if c == '-' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `namedValues` -> `named-values`.
fn kebab(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            if !out.is_empty() {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Marks of APIOps entities, by kind: (secret pointers, personal pointers).
fn apiops_marks(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "subscription" => (
            &["/properties/primaryKey", "/properties/secondaryKey"],
            &["/properties/ownerId"],
        ),
        "backend" => (
            &[
                "/properties/credentials/header",
                "/properties/credentials/query",
                "/properties/credentials/authorization/parameter",
                "/properties/proxy/password",
            ],
            &["/properties/proxy/username"],
        ),
        "logger" => (&["/properties/credentials"], &[]),
        "identity-provider" => (&["/properties/clientSecret"], &[]),
        "authorization-server" => (
            &[
                "/properties/clientSecret",
                "/properties/resourceOwnerPassword",
            ],
            &["/properties/resourceOwnerUsername"],
        ),
        "user" => (
            &[],
            &[
                "/properties/email",
                "/properties/firstName",
                "/properties/lastName",
                "/properties/identities",
            ],
        ),
        _ => (&[], &[]),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsed documents

/// The entity of one parsed JSON or YAML document at `path`.
fn recognize(rel: &str, path: String, v: Value) -> Entity {
    let mut e = Entity::new("files", "file", rel, v);
    e.path = path;
    if let Some((kind, key)) = apiops(rel) {
        let (secret, personal) = apiops_marks(&kind);
        e = e.secret(secret).personal(personal);
        if kind == "named-value"
            && e.value.pointer("/properties/secret") == Some(&Value::Bool(true))
        {
            e = e.secret(&["/properties/value"]);
        }
        if kind == "subscription" {
            if let Some(owner) = e
                .value
                .pointer("/properties/ownerId")
                .and_then(Value::as_str)
            {
                let user = owner.rsplit('/').next().unwrap_or(owner).to_string();
                e = e.subject(format!("apim:user={user}"));
            }
        }
        if kind == "user" {
            e = e.subject(format!("apim:user={key}"));
        }
        e.kind = kind;
        e.key = key;
        return e;
    }
    let str_at = |p: &str| {
        e.value
            .pointer(p)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if str_at("/type").as_deref() == Some("google.api.Service") {
        // A service config is immutable and its `id` is its identity: kept.
        let name = str_at("/name").unwrap_or_else(|| rel.to_string());
        e.key = match str_at("/id") {
            Some(id) => format!("{name}/{id}"),
            None => name,
        };
        e.kind = "service-config".into();
        return e;
    }
    if e.value.get("openapi").is_some() || e.value.get("swagger").is_some() {
        e.kind = "openapi".into();
        return e;
    }
    if e.value.get("static_resources").is_some() {
        e.kind = "envoy-bootstrap".into();
        e.secrets = field_pointers(&e.value, ENVOY_SECRETS);
    }
    e
}

/// The kind of a file stored verbatim outside an APIOps tree.
fn verbatim_kind(rel: &str) -> String {
    let lower = rel.to_ascii_lowercase();
    if lower.ends_with(".pem") || lower.ends_with(".crt") || lower.ends_with(".key") {
        "certificate".into()
    } else {
        "file".into()
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy

/// Fields of Envoy resources that hold secrets (TLS private keys and their passwords, generic
/// secrets, session ticket keys, OAuth2 client secrets).
const ENVOY_SECRETS: &[&str] = &[
    "private_key",
    "password",
    "secret",
    "session_ticket_keys",
    "client_secret",
];

fn is_envoy_dump(v: &Value) -> bool {
    v.get("configs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty() && a.iter().all(|c| c.get("@type").is_some()))
}

/// Splits an Envoy config dump into one entity per resource under `files/<stem>/`.
fn envoy_dump(stem: &str, dump: &Value) -> Vec<Entity> {
    let dir = format!("files/{stem}");
    let mut out = vec![];
    let mut used = BTreeSet::new();
    let mut push = |sub: &str, kind: &str, name: &str, mut v: Value, out: &mut Vec<Entity>| {
        canonical::strip(&mut v, canonical::VOLATILE);
        let mut key = name.to_string();
        let mut n = 2;
        while !used.insert(format!("{sub}/{key}")) {
            key = format!("{name}-{n}");
            n += 1;
        }
        let mut e = Entity::new(&format!("{dir}/{sub}"), kind, &key, v);
        e.secrets = field_pointers(&e.value, ENVOY_SECRETS);
        if sub.is_empty() {
            e.path = format!("{dir}/{}.json", file_name(&key));
        }
        out.push(e);
    };
    let configs = dump.get("configs").and_then(Value::as_array);
    for c in configs.into_iter().flatten() {
        let t = c.get("@type").and_then(Value::as_str).unwrap_or("");
        let short = t.rsplit('.').next().unwrap_or(t);
        let lists: &[(&str, &[&str])] = match short {
            "ListenersConfigDump" => &[
                ("static_listeners", &["/listener"]),
                (
                    "dynamic_listeners",
                    &[
                        "/active_state/listener",
                        "/warming_state/listener",
                        "/draining_state/listener",
                    ],
                ),
            ],
            "ClustersConfigDump" => &[
                ("static_clusters", &["/cluster"]),
                ("dynamic_active_clusters", &["/cluster"]),
                ("dynamic_warming_clusters", &["/cluster"]),
            ],
            "RoutesConfigDump" => &[
                ("static_route_configs", &["/route_config"]),
                ("dynamic_route_configs", &["/route_config"]),
            ],
            "ScopedRoutesConfigDump" => &[
                ("inline_scoped_route_configs", &["/scoped_route_configs"]),
                ("dynamic_scoped_route_configs", &["/scoped_route_configs"]),
            ],
            "SecretsConfigDump" => &[
                ("static_secrets", &["/secret"]),
                ("dynamic_active_secrets", &["/secret"]),
                ("dynamic_warming_secrets", &["/secret"]),
            ],
            "EndpointsConfigDump" => &[
                ("static_endpoint_configs", &["/endpoint_config"]),
                ("dynamic_endpoint_configs", &["/endpoint_config"]),
            ],
            _ => &[],
        };
        let (sub, kind) = match short {
            "ListenersConfigDump" => ("listeners", "listener"),
            "ClustersConfigDump" => ("clusters", "cluster"),
            "RoutesConfigDump" => ("routes", "route-config"),
            "ScopedRoutesConfigDump" => ("scoped-routes", "scoped-route-config"),
            "SecretsConfigDump" => ("secrets", "secret"),
            "EndpointsConfigDump" => ("endpoints", "endpoints"),
            "BootstrapConfigDump" => {
                let b = c.get("bootstrap").cloned().unwrap_or(Value::Null);
                push("", "envoy-bootstrap", "bootstrap", b, &mut out);
                continue;
            }
            _ => {
                push("other", "envoy-config", short, c.clone(), &mut out);
                continue;
            }
        };
        for (list, pointers) in lists {
            for item in c.get(*list).and_then(Value::as_array).into_iter().flatten() {
                let Some(res) = pointers.iter().find_map(|p| item.pointer(p)) else {
                    continue;
                };
                // Scoped route dumps hold a list of resources per item.
                let resources = match res {
                    Value::Array(a) => a.clone(),
                    r => vec![r.clone()],
                };
                for r in resources {
                    let name = r
                        .get("name")
                        .or_else(|| r.get("cluster_name"))
                        .and_then(Value::as_str)
                        .unwrap_or(kind)
                        .to_string();
                    push(sub, kind, &name, r, &mut out);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envoy_dump_without_known_resources_is_kept_whole() {
        let mut c = Capture {
            source: Source::new("files", "file:/f"),
            raw: BTreeMap::new(),
            entities: vec![],
        };
        let dump = br#"{"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "version_info": "7", "static_listeners_v4": [{"listener": {"name": "l"}}]}]}"#;
        classify(&mut c, "envoy/dump.json", dump.to_vec());
        assert_eq!(c.entities.len(), 1);
        assert_eq!(c.entities[0].path, "files/envoy/dump.json");
        assert_eq!(c.entities[0].value["configs"][0]["version_info"], "7");
    }

    #[test]
    fn apiops_paths_give_kinds_and_keys() {
        let k = |r: &str| apiops(r).map(|(k, n)| format!("{k} {n}"));
        assert_eq!(k("apis/orders/apiInformation.json").unwrap(), "api orders");
        assert_eq!(
            k("x/apis/orders/specification.yaml").unwrap(),
            "api-specification orders"
        );
        assert_eq!(
            k("apis/orders/operations/get/policy.xml").unwrap(),
            "operation-policy orders/get"
        );
        assert_eq!(
            k("namedValues/db/namedValueInformation.json").unwrap(),
            "named-value db"
        );
        assert_eq!(k("products/p/apis.json").unwrap(), "product-apis p");
        assert_eq!(k("policy.xml").unwrap(), "service-policy service");
        assert_eq!(k("misc/readme.md"), None);
    }
}
