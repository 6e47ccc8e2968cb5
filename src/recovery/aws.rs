//! Restoring AWS API Gateway (REST APIs) through the AWS SDK (see `docs/recovery.md`).
//!
//! Per REST API, the definition goes in through API Gateway's one atomic write: `PutRestApi` in
//! `overwrite` mode, with an OpenAPI 3 document rebuilt from the snapshot's entities (`openapi.rs`
//! says why not the raw export). It replaces resources, methods, integrations, models, authorizers,
//! validators and gateway responses completely or not at all; what the document does not name is
//! deleted. An API that no longer exists is first created with `CreateRestApi`, which, unlike
//! `ImportRestApi`, takes the API's tags and endpoint type; the same `PutRestApi` then writes its
//! definition. (A failure between the two leaves an empty API under that name, which `--resume`
//! fills.)
//!
//! The API is then read back and compared entity by entity with the snapshot: whatever the import did
//! not set as the snapshot says is set one entity at a time (on AWS this should find nothing; moto
//! 5.2's import keeps only paths, integrations and response codes, so there it does most of the
//! work). Then what a definition never carries, in dependency order ([`rank`]): a new deployment of
//! the restored definition, every stage pointed at it (`UpdateStage` of `/deploymentId`, so that the
//! restored definition is live), stage variables, method settings and access logs, API keys, usage
//! plans and their keys, custom domain names and base path mappings, VPC links and the account's
//! CloudWatch role.
//!
//! Deletes follow the plan only. References go first: API stages leave usage plans and base path
//! mappings leave domains before the stages and APIs they point at are deleted; VPC links are
//! deleted last, once no integration uses them. Deployments are never deleted: they are the API's
//! history, and a restore adds one.
//!
//! A staging target (another account or region) gets the snapshot with the account ids and regions in
//! its ARNs and service URLs rewritten (`arn.rs`); the plan lists each rewrite.

mod arn;
mod openapi;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;

use aws_sdk_apigateway::config::http::HttpResponse;
use aws_sdk_apigateway::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_apigateway::primitives::Blob;
use aws_sdk_apigateway::types::{
    ApiKeySourceType, ApiStage, AuthorizerType, CacheClusterSize, ConnectionType,
    ContentHandlingStrategy, DocumentationPartLocation, DocumentationPartType,
    EndpointConfiguration, EndpointType, GatewayResponseType, IntegrationType,
    MutualTlsAuthenticationInput, Op as PatchOp, PatchOperation, PutMode, QuotaPeriodType,
    QuotaSettings, SecurityPolicy, StageKey, ThrottleSettings, TlsConfig,
};
use aws_sdk_apigateway::Client;
use serde_json::{json, Value};

use super::plan::{self, Op};
use super::{Applied, Plan, Rewrite, Step, Target};
use crate::error::{Error, Result};
use crate::gateway::aws::{causes, connect, runtime, Connection, PAGE_SIZE};
use crate::gateway::canonical::str_field;
use crate::gateway::{Capture, Entity, GatewayOptions, Source};

/// Entity kinds that make up an API's definition: what `PutRestApi` writes.
const DEFINITION: &[&str] = &[
    "rest-api",
    "resource",
    "method",
    "model",
    "request-validator",
    "authorizer",
    "gateway-response",
    "documentation-part",
];

/// Fields of a custom domain name that API Gateway assigns (the names and zones DNS points at, the
/// certificate upload time): a restore cannot choose them, so they are not drift.
const DOMAIN_ASSIGNED: &[&str] = &[
    "/regionalDomainName",
    "/distributionDomainName",
    "/regionalHostedZoneId",
    "/distributionHostedZoneId",
    "/certificateUploadDate",
];

/// Account fields that AWS sets, not the account's owner: a staging target keeps its own.
const ACCOUNT_ASSIGNED: &[&str] = &["throttleSettings", "apiKeyVersion"];

/// Method setting fields and their `UpdateStage` patch paths (below `/<resource>/<method>/`).
const METHOD_SETTINGS: &[(&str, &str)] = &[
    ("metricsEnabled", "metrics/enabled"),
    ("loggingLevel", "logging/loglevel"),
    ("dataTraceEnabled", "logging/dataTrace"),
    ("throttlingBurstLimit", "throttling/burstLimit"),
    ("throttlingRateLimit", "throttling/rateLimit"),
    ("cachingEnabled", "caching/enabled"),
    ("cacheTtlInSeconds", "caching/ttlInSeconds"),
    ("cacheDataEncrypted", "caching/dataEncrypted"),
    (
        "requireAuthorizationForCacheControl",
        "caching/requireAuthorizationForCacheControl",
    ),
    (
        "unauthorizedCacheControlHeaderStrategy",
        "caching/unauthorizedCacheControlHeaderStrategy",
    ),
];

/// An API Gateway account and region to restore into.
pub struct AwsTarget {
    opts: GatewayOptions,
}

impl AwsTarget {
    /// The account and region the SDK's default chain gives, with `--region` and `--endpoint` on top.
    /// API key values are always read, so that they can be compared and restored.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `--file` is given: a restore needs the service.
    pub fn new(opts: &GatewayOptions) -> Result<Self> {
        if opts.file.is_some() {
            return Err(Error::InvalidInput(
                "a restore into AWS API Gateway goes through the service (--region, --endpoint), not --file; to write the API's definition to a file, use `gatevault export`".into(),
            ));
        }
        let mut opts = opts.clone();
        opts.include_secret_values = true;
        Ok(Self { opts })
    }
}

/// Dependency rank of an entity kind: what others point at comes first.
pub fn rank(kind: &str) -> u32 {
    match kind {
        "vpc-link" => 0,
        "rest-api" => 1,
        "model" | "request-validator" | "authorizer" => 2,
        "resource" => 3,
        "method" => 4,
        "gateway-response" | "documentation-part" => 5,
        "deployment" => 6,
        "stage" => 7,
        "api-key" => 8,
        "usage-plan" => 9,
        "domain-name" => 10,
        _ => 11,
    }
}

impl Target for AwsTarget {
    fn kind(&self) -> &str {
        "aws"
    }

    fn capture(&self) -> Result<Capture> {
        crate::gateway::aws::capture(&self.opts)
    }

    fn rank(&self, kind: &str) -> u32 {
        rank(kind)
    }

    fn adapt(&self, desired: &mut Capture, live: &Capture) -> Result<Vec<Rewrite>> {
        Ok(adapt(desired, live))
    }

    fn apply(
        &self,
        desired: &Capture,
        live: &Capture,
        plan: &Plan,
        done: &mut dyn FnMut(&Step),
    ) -> Result<Applied> {
        let rt = runtime(&self.opts)?;
        rt.block_on(async {
            let conn = connect(&self.opts).await?;
            let mut r = Restore::load(&conn, desired, live, plan, done).await?;
            r.run().await?;
            let unapplied: Vec<String> = plan
                .steps
                .iter()
                .filter(|s| !r.marked.contains(&s.path))
                .map(|s| format!("not applied: {} (see docs/recovery.md)", s.describe()))
                .collect();
            r.notes.extend(unapplied);
            Ok(Applied {
                method: "put-rest-api (overwrite) per REST API, then entity by entity".into(),
                steps: r.steps,
                notes: r.notes,
            })
        })
    }

    fn volatile(&self, kind: &str) -> bool {
        kind == "deployment"
    }

    fn volatile_field(&self, kind: &str, pointer: &str) -> bool {
        match kind {
            "stage" => pointer == "/deploymentId" || pointer == "/canarySettings/deploymentId",
            "domain-name" => DOMAIN_ASSIGNED.contains(&pointer),
            _ => false,
        }
    }
}

/// What [`Target::adapt`] does for AWS: the scope move of a staging target, API key values that the
/// snapshot does not hold, and account fields that only AWS sets.
fn adapt(desired: &mut Capture, live: &Capture) -> Vec<Rewrite> {
    let mut out = vec![];
    let from = arn::Scope::parse(desired.source.scope.as_deref());
    let to = arn::Scope::parse(live.source.scope.as_deref());
    if let (Some(from), Some(to)) = (from, to) {
        if let Some(m) = arn::Move::new(&from, &to) {
            let mut n = arn::Counts::default();
            for e in desired.entities.iter_mut() {
                m.apply(&mut e.value, &mut n);
            }
            if n.regions > 0 {
                out.push(Rewrite {
                    what: "AWS region in ARNs and service URLs".into(),
                    from: from.region.clone(),
                    to: to.region.clone(),
                    count: n.regions,
                });
            }
            if let (true, Some(f), Some(t)) = (n.accounts > 0, &from.account, &to.account) {
                out.push(Rewrite {
                    what: "AWS account id in ARNs and service URLs".into(),
                    from: f.clone(),
                    to: t.clone(),
                    count: n.accounts,
                });
            }
        }
    }

    // A snapshot taken without --include-secret-values has no key values: keep the target's, and
    // choose new ones for keys the target lacks (so that the verify compares what was set).
    let live_by_path = plan::by_path(live);
    let (mut kept, mut chosen) = (0, 0);
    for e in desired.entities.iter_mut().filter(|e| e.kind == "api-key") {
        if e.value.get("value").is_some() {
            continue;
        }
        let value = match live_by_path
            .get(e.path.as_str())
            .and_then(|l| l.value.get("value"))
        {
            Some(v) => {
                kept += 1;
                v.clone()
            }
            None => {
                chosen += 1;
                Value::String(new_key_value())
            }
        };
        if let Value::Object(m) = &mut e.value {
            m.insert("value".into(), value);
            e.secrets.push("/value".into());
        }
    }
    for (n, what, to) in [
        (
            kept,
            "API key values the snapshot does not hold (the target's are kept)",
            "(the target's)",
        ),
        (
            chosen,
            "API key values the snapshot does not hold (new keys get random values: hand them to their clients)",
            "(random)",
        ),
    ] {
        if n > 0 {
            out.push(Rewrite {
                what: what.into(),
                from: "(none)".into(),
                to: to.into(),
                count: n,
            });
        }
    }

    let mut assigned = 0;
    if let (Some(d), Some(l)) = (
        desired.entities.iter_mut().find(|e| e.kind == "account"),
        live_by_path.get("aws/account.json"),
    ) {
        for f in ACCOUNT_ASSIGNED {
            let want = l.value.get(*f);
            if d.value.get(*f) != want {
                if let Value::Object(m) = &mut d.value {
                    match want {
                        Some(v) => m.insert((*f).into(), v.clone()),
                        None => m.remove(*f),
                    };
                    assigned += 1;
                }
            }
        }
    }
    if assigned > 0 {
        out.push(Rewrite {
            what: "account throttle limits and API key version (set by AWS, not by clients)".into(),
            from: "the snapshot's".into(),
            to: "the target's".into(),
            count: assigned,
        });
    }
    out
}

/// A new API key value: 40 random letters and digits (API Gateway wants at least 20).
fn new_key_value() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 40)
}

/// The `aws/rest-apis/<api>` folder of a document path, if it is below one.
fn api_dir(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("aws/rest-apis/")?;
    let end = "aws/rest-apis/".len() + rest.find('/')?;
    Some(&path[..end])
}

/// Ids of the objects inside one REST API, by natural key.
#[derive(Default)]
struct ApiIds {
    resources: BTreeMap<String, String>,
    authorizers: BTreeMap<String, String>,
    validators: BTreeMap<String, String>,
}

/// One restore in progress.
struct Restore<'a> {
    conn: &'a Connection,
    client: &'a Client,
    desired: BTreeMap<&'a str, &'a Entity>,
    live: BTreeMap<&'a str, &'a Entity>,
    plan: &'a Plan,
    done: &'a mut dyn FnMut(&Step),
    /// Paths whose steps are done.
    marked: BTreeSet<String>,
    /// REST API key to id (the target's, updated as APIs are created and deleted).
    apis: BTreeMap<String, String>,
    /// VPC link name to id.
    links: BTreeMap<String, String>,
    /// API key name to id, as the target had them before the restore (for memberships of keys that
    /// are deleted) and as they are now.
    keys_before: BTreeMap<String, String>,
    keys: BTreeMap<String, String>,
    /// Usage plan name to id.
    usage_plans: BTreeMap<String, String>,
    /// Steps done, described.
    steps: Vec<String>,
    notes: Vec<String>,
}

/// Text of an AWS failure: `<code>: <message> (HTTP <status>)`, and what to do about it.
fn failure<E>(e: &SdkError<E, HttpResponse>) -> (String, &'static str)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e {
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = e.code().unwrap_or("");
            let answer = [code, e.message().unwrap_or("")]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(": ");
            let next = match (status, code) {
                (429, _) | (_, "TooManyRequestsException" | "LimitExceededException") => {
                    "API Gateway throttled or a quota is reached: wait, or raise the quota"
                }
                (401 | 403, _)
                | (
                    _,
                    "AccessDeniedException"
                    | "UnrecognizedClientException"
                    | "UnauthorizedException"
                    | "ExpiredTokenException",
                ) => {
                    "allow these credentials to change API Gateway (apigateway:POST, PUT, PATCH and DELETE in this account and region)"
                }
                (409, _) | (_, "ConflictException") => {
                    "an object in the way exists or is still in use: remove or rename it in the gateway"
                }
                (404, _) | (_, "NotFoundException") => {
                    "an object this step needs is gone from the gateway (changed during the restore?)"
                }
                _ => "fix what AWS names, in the account or in the snapshot's entity",
            };
            if answer.is_empty() {
                let what = format!("HTTP {status} without an error code (an internal error of the service)");
                return (what, "run again; if it persists, report it with the endpoint's kind");
            }
            (format!("{answer} (HTTP {status})"), next)
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (
            causes(e),
            "the endpoint could not be reached after the SDK's retries: check the network and --endpoint",
        ),
        _ => (
            causes(e),
            "check the endpoint and the AWS configuration (credentials, region)",
        ),
    }
}

/// A patch operation.
fn patch(op: PatchOp, path: impl Into<String>, value: Option<String>) -> PatchOperation {
    PatchOperation::builder()
        .op(op)
        .path(path)
        .set_value(value)
        .build()
}

/// `replace <path> <value>`.
fn replace(path: impl Into<String>, value: impl Into<String>) -> PatchOperation {
    patch(PatchOp::Replace, path, Some(value.into()))
}

/// A JSON pointer segment: `~` and `/` escaped.
fn esc(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// A scalar as a patch value (`true`, `300`, `text`).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn s(v: &Value, f: &str) -> Option<String> {
    str_field(v, f).map(str::to_string)
}

fn b(v: &Value, f: &str) -> Option<bool> {
    v.get(f).and_then(Value::as_bool)
}

fn int(v: &Value, f: &str) -> Option<i32> {
    v.get(f)
        .and_then(|x| x.as_i64().or_else(|| x.as_str()?.parse().ok()))
        .and_then(|x| i32::try_from(x).ok())
}

fn strs(v: &Value, f: &str) -> Option<Vec<String>> {
    v.get(f)?.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

fn str_map(v: &Value, f: &str) -> Option<HashMap<String, String>> {
    v.get(f)?.as_object().map(|m| {
        m.iter()
            .map(|(k, x)| (k.clone(), text(x)))
            .collect::<HashMap<_, _>>()
    })
}

fn bool_map(v: &Value, f: &str) -> Option<HashMap<String, bool>> {
    v.get(f)?.as_object().map(|m| {
        m.iter()
            .map(|(k, x)| (k.clone(), x.as_bool().unwrap_or(false)))
            .collect::<HashMap<_, _>>()
    })
}

/// The endpoint configuration of a REST API or domain name entity.
fn endpoint_configuration(v: &Value) -> Option<EndpointConfiguration> {
    let ec = v.get("endpointConfiguration")?;
    Some(
        EndpointConfiguration::builder()
            .set_types(
                strs(ec, "types")
                    .map(|t| t.iter().map(|x| EndpointType::from(x.as_str())).collect()),
            )
            .set_vpc_endpoint_ids(strs(ec, "vpcEndpointIds"))
            .build(),
    )
}

/// The partition of a region (`aws`, `aws-cn`, `aws-us-gov`).
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// `(api or id, stage)` of a usage plan's API stage or a base path mapping, for comparisons.
fn stage_ref(v: &Value, api_field: &str) -> (Option<String>, Option<String>) {
    (s(v, "api").or_else(|| s(v, api_field)), s(v, "stage"))
}

/// The patch operations that take a stage from `old` to `new` (without its tags), and notes on what
/// cannot be set this way. With `deployment`, the stage is also pointed at that deployment.
fn stage_ops(
    old: &Value,
    new: &Value,
    deployment: Option<&str>,
) -> (Vec<PatchOperation>, Vec<String>) {
    let name = str_field(new, "stageName").unwrap_or("?");
    let mut ops = vec![];
    let mut notes = vec![];
    if let Some(d) = deployment {
        ops.push(replace("/deploymentId", d));
    }
    let handled = [
        "stageName",
        "deploymentId",
        "tags",
        "variables",
        "methodSettings",
        "accessLogSettings",
    ];
    let keys: BTreeSet<&String> = old
        .as_object()
        .into_iter()
        .chain(new.as_object())
        .flat_map(|m| m.keys())
        .collect();
    for k in keys {
        let (o, n) = (old.get(k), new.get(k));
        if o == n || handled.contains(&k.as_str()) {
            continue;
        }
        match (k.as_str(), n) {
            (
                "description"
                | "cacheClusterEnabled"
                | "cacheClusterSize"
                | "tracingEnabled"
                | "clientCertificateId"
                | "documentationVersion",
                Some(v),
            ) => ops.push(replace(format!("/{k}"), text(v))),
            // Emptied rather than removed: moto 5.2 fails on `remove` of a stage's description.
            ("description", None) => ops.push(replace("/description", "")),
            ("cacheClusterEnabled" | "tracingEnabled", None) => {
                ops.push(replace(format!("/{k}"), "false"))
            }
            ("clientCertificateId" | "documentationVersion", None) => {
                ops.push(patch(PatchOp::Remove, format!("/{k}"), None))
            }
            _ => notes.push(format!(
                "stage {name}: {k} differs from the snapshot and is not restored (set it by hand)"
            )),
        }
    }

    let empty = json!({});
    let vars = |v: &Value| v.get("variables").cloned().unwrap_or_else(|| empty.clone());
    let (ov, nv) = (vars(old), vars(new));
    for (k, v) in nv.as_object().into_iter().flatten() {
        if ov.get(k) != Some(v) {
            ops.push(replace(format!("/variables/{}", esc(k)), text(v)));
        }
    }
    for k in ov.as_object().into_iter().flat_map(|m| m.keys()) {
        if nv.get(k).is_none() {
            ops.push(patch(
                PatchOp::Remove,
                format!("/variables/{}", esc(k)),
                None,
            ));
        }
    }

    let settings = |v: &Value| {
        v.get("methodSettings")
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (os, ns) = (settings(old), settings(new));
    for (key, set) in ns.as_object().into_iter().flatten() {
        for (field, v) in set.as_object().into_iter().flatten() {
            if os.get(key).and_then(|o| o.get(field)) == Some(v) {
                continue;
            }
            match METHOD_SETTINGS.iter().find(|(f, _)| f == field) {
                Some((_, p)) => ops.push(replace(format!("/{key}/{p}"), text(v))),
                None => notes.push(format!(
                    "stage {name}: method setting {key} {field} is not restored (set it by hand)"
                )),
            }
        }
    }
    for key in os.as_object().into_iter().flat_map(|m| m.keys()) {
        if ns.get(key).is_none() {
            ops.push(patch(PatchOp::Remove, format!("/{key}"), None));
        }
    }

    match (old.get("accessLogSettings"), new.get("accessLogSettings")) {
        (o, Some(n)) if o != Some(n) => {
            for f in ["destinationArn", "format"] {
                if let Some(v) = n.get(f) {
                    ops.push(replace(format!("/accessLogSettings/{f}"), text(v)));
                }
            }
        }
        (Some(_), None) => ops.push(patch(PatchOp::Remove, "/accessLogSettings", None)),
        _ => {}
    }
    (ops, notes)
}

impl<'a> Restore<'a> {
    async fn load(
        conn: &'a Connection,
        desired: &'a Capture,
        live: &'a Capture,
        plan: &'a Plan,
        done: &'a mut dyn FnMut(&Step),
    ) -> Result<Restore<'a>> {
        let client = &conn.client;
        let reader = conn.reader();
        let apis = reader
            .list("list REST APIs", |p| {
                client
                    .get_rest_apis()
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let links = reader
            .list("list VPC links", |p| {
                client
                    .get_vpc_links()
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let keys = reader
            .list("list API keys", |p| {
                client
                    .get_api_keys()
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let usage_plans = reader
            .list("list usage plans", |p| {
                client
                    .get_usage_plans()
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let keys = reader.ids_by_key(keys, "name", "API key")?;
        Ok(Restore {
            conn,
            client,
            desired: plan::by_path(desired),
            live: plan::by_path(live),
            plan,
            done,
            marked: BTreeSet::new(),
            apis: reader.ids_by_key(apis, "name", "REST API")?,
            links: reader.ids_by_key(links, "name", "VPC link")?,
            keys_before: keys.clone(),
            keys,
            usage_plans: reader.ids_by_key(usage_plans, "name", "usage plan")?,
            steps: vec![],
            notes: vec![],
        })
    }

    /// Reports the plan's steps on `path` as done (once).
    fn mark(&mut self, path: &str) {
        if !self.marked.insert(path.to_string()) {
            return;
        }
        for s in self.plan.steps.iter().filter(|s| s.path == path) {
            (self.done)(s);
            self.steps.push(s.describe());
        }
    }

    /// The error of `step` on the entity at `path`.
    fn fail(&self, step: &str, path: &str, why: impl std::fmt::Display) -> Error {
        Error::gateway(self.conn.describe(), format!("{step} ({path}): {why}"))
    }

    /// Sends one request for `step` on the entity at `path`.
    async fn send<T, E>(
        &self,
        step: &str,
        path: &str,
        sent: impl Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        sent.await.map_err(|e| {
            let (answer, next) = failure(&e);
            self.fail(step, path, format!("{answer}; {next}"))
        })
    }

    /// The ARN API Gateway tags `resource` (`/restapis/<id>`) by.
    fn arn(&self, resource: &str) -> String {
        let r = &self.conn.region;
        format!("arn:{}:apigateway:{r}::{resource}", partition(r))
    }

    /// Makes the tags of `resource` go from `old` to `new`. (moto 5.2 tags only stages this way.)
    async fn retag(
        &self,
        step: &str,
        path: &str,
        resource: &str,
        old: &Value,
        new: &Value,
    ) -> Result<()> {
        let (o, n) = (
            str_map(old, "tags").unwrap_or_default(),
            str_map(new, "tags").unwrap_or_default(),
        );
        if o == n {
            return Ok(());
        }
        let arn = self.arn(resource);
        let gone: Vec<String> = o.keys().filter(|k| !n.contains_key(*k)).cloned().collect();
        if !gone.is_empty() {
            self.send(
                step,
                path,
                self.client
                    .untag_resource()
                    .resource_arn(&arn)
                    .set_tag_keys(Some(gone))
                    .send(),
            )
            .await?;
        }
        let set: HashMap<String, String> =
            n.into_iter().filter(|(k, v)| o.get(k) != Some(v)).collect();
        if !set.is_empty() {
            self.send(
                step,
                path,
                self.client
                    .tag_resource()
                    .resource_arn(&arn)
                    .set_tags(Some(set))
                    .send(),
            )
            .await?;
        }
        Ok(())
    }

    /// Whether the snapshot keeps the API whose folder holds `path`.
    fn api_stays(&self, path: &str) -> bool {
        api_dir(path).is_some_and(|d| self.desired.contains_key(format!("{d}/api.json").as_str()))
    }

    /// The key and live id of the API whose folder holds `path`.
    fn live_api(&self, path: &str) -> Option<(String, String)> {
        let dir = api_dir(path)?;
        let api = self.live.get(format!("{dir}/api.json").as_str())?;
        let id = self.apis.get(&api.key)?;
        Some((api.key.clone(), id.clone()))
    }

    async fn run(&mut self) -> Result<()> {
        let plan = self.plan;
        let of = |op: fn(Op) -> bool, kind: &'static str| {
            plan.steps
                .iter()
                .filter(move |s| op(s.op) && s.kind == kind)
        };
        let writes = |o: Op| o != Op::Delete;
        let deletes = |o: Op| o == Op::Delete;

        // 1. References to what goes away leave first.
        for s in of(|o| o == Op::Update, "usage-plan") {
            self.usage_plan_detach(s).await?;
        }
        for s in of(|o| o == Op::Update, "domain-name") {
            self.domain_detach(s).await?;
        }

        // 2. Deletes, dependents first. Definition entities of APIs that stay go with the
        // overwrite below; VPC links go last.
        for s in plan.steps.iter().filter(|s| s.op == Op::Delete) {
            match s.kind.as_str() {
                "domain-name" => self.delete_domain(s).await?,
                "usage-plan" => self.delete_usage_plan(s).await?,
                "api-key" => self.delete_api_key(s).await?,
                "stage" if self.api_stays(&s.path) => self.delete_stage(s).await?,
                "rest-api" => self.delete_rest_api(s).await?,
                _ => {}
            }
        }

        // 3. Creates and updates, what is pointed at first.
        for s in of(writes, "vpc-link") {
            self.put_vpc_link(s).await?;
        }
        let dirs: BTreeSet<&str> = plan
            .steps
            .iter()
            .filter(|s| self.api_stays(&s.path))
            .filter_map(|s| api_dir(&s.path))
            .collect();
        for dir in dirs {
            self.restore_api(dir).await?;
        }
        for s in of(writes, "api-key") {
            self.put_api_key(s).await?;
        }
        for s in of(writes, "usage-plan") {
            self.put_usage_plan(s).await?;
        }
        for s in of(writes, "domain-name") {
            self.put_domain(s).await?;
        }
        for s in of(writes, "account") {
            self.put_account(s).await?;
        }
        for s in of(deletes, "vpc-link") {
            self.delete_vpc_link(s).await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------ REST APIs

    /// Brings one REST API (which the snapshot keeps) to the snapshot's state.
    async fn restore_api(&mut self, dir: &str) -> Result<()> {
        let plan = self.plan;
        let api_path = format!("{dir}/api.json");
        let Some(api) = self.desired.get(api_path.as_str()).copied() else {
            return Ok(());
        };
        let prefix = format!("{dir}/");
        let mine: Vec<&Step> = plan
            .steps
            .iter()
            .filter(|s| s.path.starts_with(&prefix))
            .collect();
        let wanted: Vec<&Entity> = self
            .desired
            .values()
            .filter(|e| e.path.starts_with(&prefix))
            .copied()
            .collect();
        let key = api.key.clone();
        let defined = mine.iter().any(|s| DEFINITION.contains(&s.kind.as_str()));
        let (id, created) = match self.apis.get(&key) {
            Some(id) => (id.clone(), false),
            None => (self.create_rest_api(api).await?, true),
        };
        if defined || created {
            self.put_definition(&key, &id, &api_path, &wanted).await?;
            self.reconcile(&key, &id, &wanted, &mine).await?;
        }
        let new_stage = mine.iter().any(|s| s.kind == "stage" && s.op == Op::Create);
        // The deployment is created without a stage name and the stages are pointed at it one by
        // one: on AWS that is the same, but moto 5.2's CreateDeployment with a stage name replaces
        // the stage, losing its variables and method settings.
        let deployment = if defined || created || new_stage {
            let step = format!("create a deployment of {key}");
            let out = self
                .send(
                    &step,
                    &api_path,
                    self.client
                        .create_deployment()
                        .rest_api_id(&id)
                        .description("restored by gatevault")
                        .send(),
                )
                .await?;
            let d = out
                .id()
                .ok_or_else(|| self.fail(&step, &api_path, "the response has no deployment id"))?
                .to_string();
            Some(d)
        } else {
            None
        };
        let mut pointed = vec![];
        for st in wanted.iter().filter(|e| e.kind == "stage") {
            let live = if created {
                None
            } else {
                self.live.get(st.path.as_str()).copied()
            };
            self.put_stage(&key, &id, st, live, deployment.as_deref())
                .await?;
            pointed.push(
                str_field(&st.value, "stageName")
                    .unwrap_or(&st.key)
                    .to_string(),
            );
            self.mark(&st.path);
        }
        if let Some(d) = deployment {
            self.notes.push(format!(
                "REST API {key}: new deployment {d} of the restored definition; stages pointing at it: {}",
                if pointed.is_empty() { "none".into() } else { pointed.join(", ") }
            ));
            let deployed: BTreeSet<&str> = wanted
                .iter()
                .filter(|e| e.kind == "stage")
                .filter_map(|e| str_field(&e.value, "deploymentId"))
                .collect();
            if deployed.len() > 1 {
                self.notes.push(format!(
                    "REST API {key}: in the snapshot its stages served {} different deployments; they now all serve the snapshot's working definition",
                    deployed.len()
                ));
            }
        }
        Ok(())
    }

    async fn create_rest_api(&mut self, api: &Entity) -> Result<String> {
        let v = &api.value;
        let step = format!("create rest-api {}", api.key);
        let out = self
            .send(
                &step,
                &api.path,
                self.client
                    .create_rest_api()
                    .name(str_field(v, "name").unwrap_or(&api.key))
                    .set_description(s(v, "description"))
                    .set_version(s(v, "version"))
                    .set_binary_media_types(strs(v, "binaryMediaTypes"))
                    .set_minimum_compression_size(int(v, "minimumCompressionSize"))
                    .set_api_key_source(str_field(v, "apiKeySource").map(ApiKeySourceType::from))
                    .set_endpoint_configuration(endpoint_configuration(v))
                    .set_policy(str_field(v, "policy").map(openapi::policy_text))
                    .set_tags(str_map(v, "tags"))
                    .set_disable_execute_api_endpoint(b(v, "disableExecuteApiEndpoint"))
                    .send(),
            )
            .await?;
        let id = out
            .id()
            .ok_or_else(|| self.fail(&step, &api.path, "the response has no id"))?
            .to_string();
        self.apis.insert(api.key.clone(), id.clone());
        self.mark(&api.path);
        Ok(id)
    }

    /// `PutRestApi` in `overwrite` mode with the definition rebuilt from `wanted`.
    async fn put_definition(
        &mut self,
        key: &str,
        id: &str,
        path: &str,
        wanted: &[&Entity],
    ) -> Result<()> {
        let doc = openapi::document(wanted, &self.links);
        let body = serde_json::to_vec(&doc).expect("JSON serializes");
        let step = format!("put-rest-api {key} (overwrite)");
        self.client
            .put_rest_api()
            .rest_api_id(id)
            .mode(PutMode::Overwrite)
            // Warnings do not stop the import: the read-back below finds what it dropped.
            .fail_on_warnings(false)
            .body(Blob::new(body))
            .send()
            .await
            .map_err(|e| {
                let (answer, next) = failure(&e);
                self.fail(
                    &step,
                    path,
                    format!("{answer}; the definition of {key} is unchanged (PutRestApi applies one completely or not at all): {next}"),
                )
            })?;
        Ok(())
    }

    /// Reads the API back after the definition was put and sets, entity by entity, whatever does
    /// not match the snapshot: creates and updates parents first, then deletes children first.
    async fn reconcile(
        &mut self,
        key: &str,
        id: &str,
        wanted: &[&Entity],
        mine: &[&Step],
    ) -> Result<()> {
        let definition = |e: &Entity| DEFINITION.contains(&e.kind.as_str());
        let after = self.conn.read_rest_api(key, id).await?;
        let capture = |entities: Vec<Entity>| Capture {
            source: Source::new("aws", "aws"),
            raw: BTreeMap::new(),
            entities,
        };
        let after = capture(after.into_iter().filter(|e| definition(e)).collect());
        let want = capture(
            wanted
                .iter()
                .filter(|e| definition(e))
                .map(|e| (*e).clone())
                .collect(),
        );
        let diffs = plan::plan(&after, &want, &rank, true);
        for s in mine
            .iter()
            .filter(|s| DEFINITION.contains(&s.kind.as_str()))
        {
            if !diffs.iter().any(|d| d.path == s.path) {
                self.mark(&s.path);
            }
        }
        if diffs.is_empty() {
            return Ok(());
        }
        let after_by_path = plan::by_path(&after);
        let want_by_path = plan::by_path(&want);
        let mut ids = self.api_ids(key, id).await?;
        for d in diffs.iter().filter(|d| d.op != Op::Delete) {
            let (Some(w), old) = (
                want_by_path.get(d.path.as_str()),
                after_by_path.get(d.path.as_str()).copied(),
            ) else {
                continue;
            };
            self.write_entity(key, id, &mut ids, w, old).await?;
            self.mark(&d.path);
        }
        let mut gone: Vec<&Step> = diffs.iter().filter(|d| d.op == Op::Delete).collect();
        // Children first: higher ranks, then deeper paths.
        gone.sort_by(|a, b| {
            rank(&b.kind)
                .cmp(&rank(&a.kind))
                .then_with(|| b.key.cmp(&a.key))
        });
        for d in gone {
            if let Some(old) = after_by_path.get(d.path.as_str()) {
                self.delete_entity(key, id, &ids, old).await?;
            }
            self.mark(&d.path);
        }
        Ok(())
    }

    /// Resource, authorizer and validator ids of API `id`.
    async fn api_ids(&self, key: &str, id: &str) -> Result<ApiIds> {
        let reader = self.conn.reader();
        let client = self.client;
        let resources = reader
            .list(&format!("list the resources of {key}"), |p| {
                client
                    .get_resources()
                    .rest_api_id(id)
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let authorizers = reader
            .list(&format!("list the authorizers of {key}"), |p| {
                client
                    .get_authorizers()
                    .rest_api_id(id)
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let validators = reader
            .list(&format!("list the request validators of {key}"), |p| {
                client
                    .get_request_validators()
                    .rest_api_id(id)
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        Ok(ApiIds {
            resources: reader.ids_by_key(resources, "path", "resource")?,
            authorizers: reader.ids_by_key(authorizers, "name", "authorizer")?,
            validators: reader.ids_by_key(validators, "name", "request validator")?,
        })
    }

    /// Creates or updates one definition entity of API `id` (`old` is its state after the put).
    async fn write_entity(
        &mut self,
        key: &str,
        id: &str,
        ids: &mut ApiIds,
        e: &Entity,
        old: Option<&Entity>,
    ) -> Result<()> {
        let v = &e.value;
        let verb = if old.is_some() { "update" } else { "create" };
        let step = format!("{verb} {} {} of {key}", e.kind, e.key);
        let path = e.path.as_str();
        let c = self.client;
        match e.kind.as_str() {
            "rest-api" => {
                let old = old.map_or(Value::Null, |o| o.value.clone());
                self.update_rest_api(&step, path, id, &old, v).await?;
            }
            "resource" => {
                let full = str_field(v, "path").unwrap_or(&e.key);
                let (parent, part) = match full.rsplit_once('/') {
                    Some(("", part)) => ("/", part),
                    Some((parent, part)) => (parent, part),
                    None => ("/", full),
                };
                let parent_id = ids.resources.get(parent).ok_or_else(|| {
                    self.fail(
                        &step,
                        path,
                        format!("its parent resource {parent} does not exist"),
                    )
                })?;
                let out = self
                    .send(
                        &step,
                        path,
                        c.create_resource()
                            .rest_api_id(id)
                            .parent_id(parent_id)
                            .path_part(part)
                            .send(),
                    )
                    .await?;
                if let Some(rid) = out.id() {
                    ids.resources.insert(full.to_string(), rid.to_string());
                }
            }
            "method" => self.put_method(&step, id, ids, e, old.is_some()).await?,
            "model" => match old {
                None => {
                    self.send(
                        &step,
                        path,
                        c.create_model()
                            .rest_api_id(id)
                            .name(str_field(v, "name").unwrap_or(&e.key))
                            .content_type(str_field(v, "contentType").unwrap_or("application/json"))
                            .set_schema(s(v, "schema"))
                            .set_description(s(v, "description"))
                            .send(),
                    )
                    .await?;
                }
                Some(o) => {
                    let mut ops = vec![];
                    for f in ["schema", "description"] {
                        if o.value.get(f) != v.get(f) {
                            ops.push(replace(
                                format!("/{f}"),
                                v.get(f).map(text).unwrap_or_default(),
                            ));
                        }
                    }
                    if o.value.get("contentType") != v.get("contentType") {
                        self.notes.push(format!(
                            "model {} of {key}: its content type differs and cannot be changed (delete the model, then restore again)",
                            e.key
                        ));
                    }
                    if !ops.is_empty() {
                        self.send(
                            &step,
                            path,
                            c.update_model()
                                .rest_api_id(id)
                                .model_name(&e.key)
                                .set_patch_operations(Some(ops))
                                .send(),
                        )
                        .await?;
                    }
                }
            },
            "request-validator" => match old.and_then(|_| ids.validators.get(&e.key)) {
                None => {
                    let out = self
                        .send(
                            &step,
                            path,
                            c.create_request_validator()
                                .rest_api_id(id)
                                .name(str_field(v, "name").unwrap_or(&e.key))
                                .set_validate_request_body(b(v, "validateRequestBody"))
                                .set_validate_request_parameters(b(v, "validateRequestParameters"))
                                .send(),
                        )
                        .await?;
                    if let Some(x) = out.id() {
                        ids.validators.insert(e.key.clone(), x.to_string());
                    }
                }
                Some(vid) => {
                    let ops = ["validateRequestBody", "validateRequestParameters"]
                        .iter()
                        .map(|f| replace(format!("/{f}"), b(v, f).unwrap_or(false).to_string()))
                        .collect();
                    self.send(
                        &step,
                        path,
                        c.update_request_validator()
                            .rest_api_id(id)
                            .request_validator_id(vid)
                            .set_patch_operations(Some(ops))
                            .send(),
                    )
                    .await?;
                }
            },
            "authorizer" => match old.and_then(|_| ids.authorizers.get(&e.key)) {
                None => {
                    let out = self
                        .send(
                            &step,
                            path,
                            c.create_authorizer()
                                .rest_api_id(id)
                                .name(str_field(v, "name").unwrap_or(&e.key))
                                .set_type(str_field(v, "type").map(AuthorizerType::from))
                                .set_provider_arns(strs(v, "providerARNs"))
                                .set_auth_type(s(v, "authType"))
                                .set_authorizer_uri(s(v, "authorizerUri"))
                                .set_authorizer_credentials(s(v, "authorizerCredentials"))
                                .set_identity_source(s(v, "identitySource"))
                                .set_identity_validation_expression(s(
                                    v,
                                    "identityValidationExpression",
                                ))
                                .set_authorizer_result_ttl_in_seconds(int(
                                    v,
                                    "authorizerResultTtlInSeconds",
                                ))
                                .send(),
                        )
                        .await?;
                    if let Some(x) = out.id() {
                        ids.authorizers.insert(e.key.clone(), x.to_string());
                    }
                }
                Some(aid) => {
                    let o = old.map_or(&Value::Null, |o| &o.value);
                    let mut ops = vec![];
                    for f in [
                        "type",
                        "authType",
                        "authorizerUri",
                        "authorizerCredentials",
                        "identitySource",
                        "identityValidationExpression",
                        "authorizerResultTtlInSeconds",
                    ] {
                        if o.get(f) != v.get(f) {
                            ops.push(replace(
                                format!("/{f}"),
                                v.get(f).map(text).unwrap_or_default(),
                            ));
                        }
                    }
                    let (oa, na) = (
                        strs(o, "providerARNs").unwrap_or_default(),
                        strs(v, "providerARNs").unwrap_or_default(),
                    );
                    for a in na.iter().filter(|a| !oa.contains(a)) {
                        ops.push(patch(
                            PatchOp::Add,
                            format!("/providerARNs/{}", esc(a)),
                            None,
                        ));
                    }
                    for a in oa.iter().filter(|a| !na.contains(a)) {
                        ops.push(patch(
                            PatchOp::Remove,
                            format!("/providerARNs/{}", esc(a)),
                            None,
                        ));
                    }
                    self.send(
                        &step,
                        path,
                        c.update_authorizer()
                            .rest_api_id(id)
                            .authorizer_id(aid)
                            .set_patch_operations(Some(ops))
                            .send(),
                    )
                    .await?;
                }
            },
            "gateway-response" => {
                let rtype = str_field(v, "responseType").unwrap_or(&e.key);
                if v.get("defaultResponse") == Some(&json!(true)) {
                    // The snapshot has the default: deleting a response resets it to the default.
                    self.send(
                        &step,
                        path,
                        c.delete_gateway_response()
                            .rest_api_id(id)
                            .response_type(GatewayResponseType::from(rtype))
                            .send(),
                    )
                    .await?;
                } else {
                    self.send(
                        &step,
                        path,
                        c.put_gateway_response()
                            .rest_api_id(id)
                            .response_type(GatewayResponseType::from(rtype))
                            .set_status_code(s(v, "statusCode"))
                            .set_response_parameters(str_map(v, "responseParameters"))
                            .set_response_templates(str_map(v, "responseTemplates"))
                            .send(),
                    )
                    .await?;
                }
            }
            "documentation-part" => {
                let properties = v.get("properties").map(text);
                match old {
                    None => {
                        let location =
                            documentation_location(v).map_err(|why| self.fail(&step, path, why))?;
                        self.send(
                            &step,
                            path,
                            c.create_documentation_part()
                                .rest_api_id(id)
                                .location(location)
                                .set_properties(properties)
                                .send(),
                        )
                        .await?;
                    }
                    Some(_) => {
                        let part = self.documentation_part_id(key, id, &e.key).await?;
                        let ops = vec![replace("/properties", properties.unwrap_or_default())];
                        self.send(
                            &step,
                            path,
                            c.update_documentation_part()
                                .rest_api_id(id)
                                .documentation_part_id(part)
                                .set_patch_operations(Some(ops))
                                .send(),
                        )
                        .await?;
                    }
                }
            }
            other => self.notes.push(format!(
                "{other} {} of {key} differs and gatevault does not restore {other} entities",
                e.key
            )),
        }
        Ok(())
    }

    /// Deletes one definition entity of API `id`.
    async fn delete_entity(&mut self, key: &str, id: &str, ids: &ApiIds, e: &Entity) -> Result<()> {
        let step = format!("delete {} {} of {key}", e.kind, e.key);
        let path = e.path.as_str();
        let c = self.client;
        let missing = || self.fail(&step, path, "its id is not in the gateway's listing");
        match e.kind.as_str() {
            "resource" => {
                let Some(rid) = ids.resources.get(&e.key) else {
                    // Gone with its parent.
                    return Ok(());
                };
                self.send(
                    &step,
                    path,
                    c.delete_resource().rest_api_id(id).resource_id(rid).send(),
                )
                .await?;
            }
            "method" => {
                let (verb, rpath) = e.key.split_once(' ').unwrap_or((&e.key, "/"));
                let rid = ids.resources.get(rpath).ok_or_else(missing)?;
                self.send(
                    &step,
                    path,
                    c.delete_method()
                        .rest_api_id(id)
                        .resource_id(rid)
                        .http_method(verb)
                        .send(),
                )
                .await?;
            }
            "model" => {
                self.send(
                    &step,
                    path,
                    c.delete_model().rest_api_id(id).model_name(&e.key).send(),
                )
                .await?;
            }
            "request-validator" => {
                let vid = ids.validators.get(&e.key).ok_or_else(missing)?;
                self.send(
                    &step,
                    path,
                    c.delete_request_validator()
                        .rest_api_id(id)
                        .request_validator_id(vid)
                        .send(),
                )
                .await?;
            }
            "authorizer" => {
                let aid = ids.authorizers.get(&e.key).ok_or_else(missing)?;
                self.send(
                    &step,
                    path,
                    c.delete_authorizer()
                        .rest_api_id(id)
                        .authorizer_id(aid)
                        .send(),
                )
                .await?;
            }
            "gateway-response" => {
                let rtype = str_field(&e.value, "responseType").unwrap_or(&e.key);
                self.send(
                    &step,
                    path,
                    c.delete_gateway_response()
                        .rest_api_id(id)
                        .response_type(GatewayResponseType::from(rtype))
                        .send(),
                )
                .await?;
            }
            "documentation-part" => {
                let part = self.documentation_part_id(key, id, &e.key).await?;
                self.send(
                    &step,
                    path,
                    c.delete_documentation_part()
                        .rest_api_id(id)
                        .documentation_part_id(part)
                        .send(),
                )
                .await?;
            }
            other => self.notes.push(format!(
                "{other} {} of {key} is not in the snapshot and gatevault does not delete {other} entities",
                e.key
            )),
        }
        Ok(())
    }

    /// The id of the documentation part keyed `part` (as the capture keys them) of API `id`.
    async fn documentation_part_id(&self, key: &str, id: &str, part: &str) -> Result<String> {
        let reader = self.conn.reader();
        let client = self.client;
        let parts = reader
            .list(&format!("list the documentation parts of {key}"), |p| {
                client
                    .get_documentation_parts()
                    .rest_api_id(id)
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        parts
            .iter()
            .find(|p| {
                let location = p.get("location").cloned().unwrap_or(Value::Null);
                let k = ["type", "path", "method", "statusCode", "name"]
                    .iter()
                    .filter_map(|f| str_field(&location, f))
                    .collect::<Vec<_>>()
                    .join(" ");
                k == part || part.starts_with(&format!("{k}@"))
            })
            .and_then(|p| s(p, "id"))
            .ok_or_else(|| {
                self.fail(
                    &format!("find documentation part {part} of {key}"),
                    &format!("aws/rest-apis/{key}/documentation-parts"),
                    "it is not in the gateway's listing",
                )
            })
    }

    /// `UpdateRestApi` (and tags) from `old` to `new`.
    async fn update_rest_api(
        &mut self,
        step: &str,
        path: &str,
        id: &str,
        old: &Value,
        new: &Value,
    ) -> Result<()> {
        let mut ops = vec![];
        for f in ["description", "apiKeySource", "minimumCompressionSize"] {
            if old.get(f) != new.get(f) {
                ops.push(replace(
                    format!("/{f}"),
                    new.get(f).map(text).unwrap_or_default(),
                ));
            }
        }
        if old.get("disableExecuteApiEndpoint") != new.get("disableExecuteApiEndpoint") {
            let on = b(new, "disableExecuteApiEndpoint").unwrap_or(false);
            ops.push(replace("/disableExecuteApiEndpoint", on.to_string()));
        }
        if old.get("policy") != new.get("policy") {
            let p = str_field(new, "policy").map(openapi::policy_text);
            ops.push(replace("/policy", p.unwrap_or_default()));
        }
        let (om, nm) = (
            strs(old, "binaryMediaTypes").unwrap_or_default(),
            strs(new, "binaryMediaTypes").unwrap_or_default(),
        );
        for t in nm.iter().filter(|t| !om.contains(t)) {
            ops.push(patch(
                PatchOp::Add,
                format!("/binaryMediaTypes/{}", esc(t)),
                None,
            ));
        }
        for t in om.iter().filter(|t| !nm.contains(t)) {
            ops.push(patch(
                PatchOp::Remove,
                format!("/binaryMediaTypes/{}", esc(t)),
                None,
            ));
        }
        let types = |v: &Value| {
            v.pointer("/endpointConfiguration/types")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let (Some(o), Some(n)) = (types(old), types(new)) {
            if o != n {
                ops.push(replace(format!("/endpointConfiguration/types/{o}"), n));
            }
        }
        // These are AWS's patch paths. moto 5.2 differs on two: its `add` of a binary media type
        // takes the value instead of the path, and any value of `/disableExecuteApiEndpoint` sets it.
        let name = str_field(new, "name").unwrap_or("?").to_string();
        for f in ["version", "name"] {
            if old.get(f) != new.get(f) {
                self.notes.push(format!(
                    "REST API {name}: its {f} differs from the snapshot and is not restored (set it by hand)"
                ));
            }
        }
        if !ops.is_empty() {
            self.send(
                step,
                path,
                self.client
                    .update_rest_api()
                    .rest_api_id(id)
                    .set_patch_operations(Some(ops))
                    .send(),
            )
            .await?;
        }
        self.retag(step, path, &format!("/restapis/{id}"), old, new)
            .await
    }

    /// Puts one method whole: AWS refuses `PutMethod` on an existing method (`ConflictException`;
    /// moto 5.2 overwrites it), so it is deleted first. Nothing serves the method in between: stages
    /// serve deployments, and the deployment comes after.
    async fn put_method(
        &mut self,
        step: &str,
        id: &str,
        ids: &ApiIds,
        e: &Entity,
        exists: bool,
    ) -> Result<()> {
        let m = &e.value;
        let path = e.path.as_str();
        let (verb, rpath) = e.key.split_once(' ').unwrap_or((&e.key, "/"));
        let verb = str_field(m, "httpMethod").unwrap_or(verb);
        let rpath = str_field(m, "resourcePath").unwrap_or(rpath);
        let rid = ids.resources.get(rpath).ok_or_else(|| {
            self.fail(
                step,
                path,
                format!("its resource {rpath} does not exist after the definition was put"),
            )
        })?;
        let named = |field: &str, raw: &str, ids: &BTreeMap<String, String>| {
            str_field(m, field)
                .and_then(|n| ids.get(n).cloned())
                .or_else(|| s(m, raw))
        };
        let c = self.client;
        if exists {
            self.send(
                step,
                path,
                c.delete_method()
                    .rest_api_id(id)
                    .resource_id(rid)
                    .http_method(verb)
                    .send(),
            )
            .await?;
        }
        self.send(
            step,
            path,
            c.put_method()
                .rest_api_id(id)
                .resource_id(rid)
                .http_method(verb)
                .authorization_type(str_field(m, "authorizationType").unwrap_or("NONE"))
                .set_authorizer_id(named("authorizer", "authorizerId", &ids.authorizers))
                .set_api_key_required(b(m, "apiKeyRequired"))
                .set_operation_name(s(m, "operationName"))
                .set_request_parameters(bool_map(m, "requestParameters"))
                .set_request_models(str_map(m, "requestModels"))
                .set_request_validator_id(named(
                    "requestValidator",
                    "requestValidatorId",
                    &ids.validators,
                ))
                .set_authorization_scopes(strs(m, "authorizationScopes"))
                .send(),
        )
        .await?;
        for (code, r) in m
            .get("methodResponses")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            self.send(
                step,
                path,
                c.put_method_response()
                    .rest_api_id(id)
                    .resource_id(rid)
                    .http_method(verb)
                    .status_code(code)
                    .set_response_parameters(bool_map(r, "responseParameters"))
                    .set_response_models(str_map(r, "responseModels"))
                    .send(),
            )
            .await?;
        }
        let Some(i) = m.get("methodIntegration") else {
            return Ok(());
        };
        let connection = str_field(i, "connection")
            .and_then(|n| self.links.get(n).cloned())
            .or_else(|| s(i, "connectionId"));
        self.send(
            step,
            path,
            c.put_integration()
                .rest_api_id(id)
                .resource_id(rid)
                .http_method(verb)
                .set_type(str_field(i, "type").map(IntegrationType::from))
                .set_integration_http_method(s(i, "httpMethod"))
                .set_uri(s(i, "uri"))
                .set_connection_type(str_field(i, "connectionType").map(ConnectionType::from))
                .set_connection_id(connection)
                .set_credentials(s(i, "credentials"))
                .set_request_parameters(str_map(i, "requestParameters"))
                .set_request_templates(str_map(i, "requestTemplates"))
                .set_passthrough_behavior(s(i, "passthroughBehavior"))
                .set_cache_namespace(s(i, "cacheNamespace"))
                .set_cache_key_parameters(strs(i, "cacheKeyParameters"))
                .set_content_handling(
                    str_field(i, "contentHandling").map(ContentHandlingStrategy::from),
                )
                .set_timeout_in_millis(int(i, "timeoutInMillis"))
                .set_tls_config(i.get("tlsConfig").map(|t| {
                    TlsConfig::builder()
                        .set_insecure_skip_verification(b(t, "insecureSkipVerification"))
                        .build()
                }))
                .send(),
        )
        .await?;
        for (code, r) in i
            .get("integrationResponses")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            self.send(
                step,
                path,
                c.put_integration_response()
                    .rest_api_id(id)
                    .resource_id(rid)
                    .http_method(verb)
                    .status_code(str_field(r, "statusCode").unwrap_or(code))
                    .set_selection_pattern(s(r, "selectionPattern"))
                    .set_response_parameters(str_map(r, "responseParameters"))
                    .set_response_templates(str_map(r, "responseTemplates"))
                    .set_content_handling(
                        str_field(r, "contentHandling").map(ContentHandlingStrategy::from),
                    )
                    .send(),
            )
            .await?;
        }
        Ok(())
    }

    /// Creates stage `st` of API `id` (when `live` is `None`) or updates it from `live`.
    async fn put_stage(
        &mut self,
        key: &str,
        id: &str,
        st: &Entity,
        live: Option<&Entity>,
        deployment: Option<&str>,
    ) -> Result<()> {
        let v = &st.value;
        let name = str_field(v, "stageName").unwrap_or(&st.key);
        let path = st.path.as_str();
        let c = self.client;
        let (ops, notes) = match live {
            None => {
                let step = format!("create stage {name} of {key}");
                let Some(d) = deployment else {
                    return Err(self.fail(&step, path, "there is no deployment to point it at"));
                };
                self.send(
                    &step,
                    path,
                    c.create_stage()
                        .rest_api_id(id)
                        .stage_name(name)
                        .deployment_id(d)
                        .set_description(s(v, "description"))
                        .set_cache_cluster_enabled(b(v, "cacheClusterEnabled"))
                        .set_cache_cluster_size(
                            str_field(v, "cacheClusterSize").map(CacheClusterSize::from),
                        )
                        .set_variables(str_map(v, "variables"))
                        .set_tracing_enabled(b(v, "tracingEnabled"))
                        .set_documentation_version(s(v, "documentationVersion"))
                        .set_tags(str_map(v, "tags"))
                        .send(),
                )
                .await?;
                // What CreateStage took is set; the rest goes through UpdateStage (or a note).
                let created: serde_json::Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        [
                            "stageName",
                            "deploymentId",
                            "description",
                            "cacheClusterEnabled",
                            "cacheClusterSize",
                            "variables",
                            "tracingEnabled",
                            "documentationVersion",
                            "tags",
                        ]
                        .contains(&k.as_str())
                    })
                    .map(|(k, x)| (k.clone(), x.clone()))
                    .collect();
                stage_ops(&Value::Object(created), v, None)
            }
            Some(l) => stage_ops(&l.value, v, deployment),
        };
        self.notes.extend(notes);
        let step = format!("update stage {name} of {key}");
        if !ops.is_empty() {
            self.send(
                &step,
                path,
                c.update_stage()
                    .rest_api_id(id)
                    .stage_name(name)
                    .set_patch_operations(Some(ops))
                    .send(),
            )
            .await?;
        }
        if let Some(l) = live {
            self.retag(
                &step,
                path,
                &format!("/restapis/{id}/stages/{name}"),
                &l.value,
                v,
            )
            .await?;
        }
        Ok(())
    }

    async fn delete_stage(&mut self, s: &Step) -> Result<()> {
        let Some((key, id)) = self.live_api(&s.path) else {
            self.mark(&s.path);
            return Ok(());
        };
        let name = self
            .live
            .get(s.path.as_str())
            .and_then(|e| str_field(&e.value, "stageName"))
            .unwrap_or(&s.key)
            .to_string();
        self.send(
            &format!("delete stage {name} of {key}"),
            &s.path,
            self.client
                .delete_stage()
                .rest_api_id(&id)
                .stage_name(&name)
                .send(),
        )
        .await?;
        self.mark(&s.path);
        Ok(())
    }

    async fn delete_rest_api(&mut self, s: &Step) -> Result<()> {
        if let Some(id) = self.apis.get(&s.key).cloned() {
            self.send(
                &s.describe(),
                &s.path,
                self.client.delete_rest_api().rest_api_id(&id).send(),
            )
            .await?;
            self.apis.remove(&s.key);
        }
        // Everything below the API went with it.
        let plan = self.plan;
        if let Some(dir) = api_dir(&s.path) {
            let prefix = format!("{dir}/");
            for p in plan.steps.iter().filter(|x| x.path.starts_with(&prefix)) {
                self.mark(&p.path);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------------ account level

    async fn put_vpc_link(&mut self, st: &Step) -> Result<()> {
        let Some(e) = self.desired.get(st.path.as_str()).copied() else {
            return Ok(());
        };
        let v = &e.value;
        let step = st.describe();
        match (st.op, self.links.get(&e.key).cloned()) {
            (Op::Create, _) | (_, None) => {
                let out = self
                    .send(
                        &step,
                        &e.path,
                        self.client
                            .create_vpc_link()
                            .name(str_field(v, "name").unwrap_or(&e.key))
                            .set_description(s(v, "description"))
                            .set_target_arns(strs(v, "targetArns"))
                            .set_tags(str_map(v, "tags"))
                            .send(),
                    )
                    .await?;
                if let Some(id) = out.id() {
                    self.links.insert(e.key.clone(), id.to_string());
                }
                self.notes.push(format!(
                    "VPC link {} created: AWS takes several minutes to make it AVAILABLE, and integrations through it fail until then",
                    e.key
                ));
            }
            (_, Some(id)) => {
                let old = self
                    .live
                    .get(e.path.as_str())
                    .map_or(Value::Null, |l| l.value.clone());
                if old.get("description") != v.get("description") {
                    let ops = vec![replace(
                        "/description",
                        v.get("description").map(text).unwrap_or_default(),
                    )];
                    self.send(
                        &step,
                        &e.path,
                        self.client
                            .update_vpc_link()
                            .vpc_link_id(&id)
                            .set_patch_operations(Some(ops))
                            .send(),
                    )
                    .await?;
                }
                if old.get("targetArns") != v.get("targetArns") {
                    self.notes.push(format!(
                        "VPC link {}: its target load balancers differ and cannot be changed (delete the link, then restore again)",
                        e.key
                    ));
                }
                self.retag(&step, &e.path, &format!("/vpclinks/{id}"), &old, v)
                    .await?;
            }
        }
        self.mark(&e.path);
        Ok(())
    }

    async fn delete_vpc_link(&mut self, s: &Step) -> Result<()> {
        if let Some(id) = self.links.get(&s.key).cloned() {
            self.send(
                &s.describe(),
                &s.path,
                self.client.delete_vpc_link().vpc_link_id(&id).send(),
            )
            .await?;
        }
        self.mark(&s.path);
        Ok(())
    }

    async fn put_api_key(&mut self, st: &Step) -> Result<()> {
        let Some(e) = self.desired.get(st.path.as_str()).copied() else {
            return Ok(());
        };
        let v = &e.value;
        let step = st.describe();
        let stage_keys = |keys: &Vec<String>, apis: &BTreeMap<String, String>| -> Vec<String> {
            keys.iter()
                .map(|k| match k.split_once('/') {
                    Some((api, stage)) => match apis.get(api) {
                        Some(id) => format!("{id}/{stage}"),
                        None => k.clone(),
                    },
                    None => k.clone(),
                })
                .collect()
        };
        let wanted_stages = stage_keys(&strs(v, "stageKeys").unwrap_or_default(), &self.apis);
        match self.keys.get(&e.key).cloned() {
            None => {
                let sk: Vec<StageKey> = wanted_stages
                    .iter()
                    .filter_map(|k| k.split_once('/'))
                    .map(|(api, stage)| {
                        StageKey::builder()
                            .rest_api_id(api)
                            .stage_name(stage)
                            .build()
                    })
                    .collect();
                let out = self
                    .send(
                        &step,
                        &e.path,
                        self.client
                            .create_api_key()
                            .name(str_field(v, "name").unwrap_or(&e.key))
                            .set_description(s(v, "description"))
                            .set_enabled(b(v, "enabled"))
                            .set_value(s(v, "value"))
                            .set_customer_id(s(v, "customerId"))
                            .set_tags(str_map(v, "tags"))
                            .set_stage_keys((!sk.is_empty()).then_some(sk))
                            .send(),
                    )
                    .await?;
                if let Some(id) = out.id() {
                    self.keys.insert(e.key.clone(), id.to_string());
                }
            }
            Some(id) => {
                let old = self
                    .live
                    .get(e.path.as_str())
                    .map_or(Value::Null, |l| l.value.clone());
                let mut ops = vec![];
                for f in ["description", "customerId"] {
                    if old.get(f) != v.get(f) {
                        ops.push(replace(
                            format!("/{f}"),
                            v.get(f).map(text).unwrap_or_default(),
                        ));
                    }
                }
                if old.get("enabled") != v.get("enabled") {
                    let on = b(v, "enabled").unwrap_or(false);
                    ops.push(replace("/enabled", on.to_string()));
                }
                let had = stage_keys(&strs(&old, "stageKeys").unwrap_or_default(), &self.apis);
                for k in wanted_stages.iter().filter(|k| !had.contains(k)) {
                    ops.push(patch(PatchOp::Add, "/stages", Some(k.clone())));
                }
                for k in had.iter().filter(|k| !wanted_stages.contains(k)) {
                    ops.push(patch(PatchOp::Remove, "/stages", Some(k.clone())));
                }
                if old.get("value") != v.get("value") && v.get("value").is_some() {
                    self.notes.push(format!(
                        "API key {}: its value differs from the snapshot and API Gateway cannot change a key's value (delete the key, then restore again to recreate it)",
                        e.key
                    ));
                }
                if !ops.is_empty() {
                    self.send(
                        &step,
                        &e.path,
                        self.client
                            .update_api_key()
                            .api_key(&id)
                            .set_patch_operations(Some(ops))
                            .send(),
                    )
                    .await?;
                }
                self.retag(&step, &e.path, &format!("/apikeys/{id}"), &old, v)
                    .await?;
            }
        }
        self.mark(&e.path);
        Ok(())
    }

    async fn delete_api_key(&mut self, s: &Step) -> Result<()> {
        if let Some(id) = self.keys.get(&s.key).cloned() {
            self.send(
                &s.describe(),
                &s.path,
                self.client.delete_api_key().api_key(&id).send(),
            )
            .await?;
            self.keys.remove(&s.key);
        }
        self.mark(&s.path);
        Ok(())
    }

    /// `<api id>:<stage>` of a usage plan's API stage entry, with the ids the target has now.
    fn api_stage_id(&self, entry: &Value) -> Option<String> {
        let id = match (s(entry, "api"), s(entry, "apiId")) {
            (Some(name), _) => self.apis.get(&name).cloned(),
            (None, raw) => raw,
        };
        Some(format!("{}:{}", id?, s(entry, "stage")?))
    }

    /// Removes from a usage plan the API stages the snapshot's plan does not have.
    async fn usage_plan_detach(&mut self, st: &Step) -> Result<()> {
        let (Some(l), Some(d)) = (
            self.live.get(st.path.as_str()).copied(),
            self.desired.get(st.path.as_str()).copied(),
        ) else {
            return Ok(());
        };
        let Some(id) = self.usage_plans.get(&l.key).cloned() else {
            return Ok(());
        };
        let wanted: Vec<_> = d
            .value
            .get("apiStages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|x| stage_ref(x, "apiId"))
            .collect();
        let ops: Vec<PatchOperation> = l
            .value
            .get("apiStages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|x| !wanted.contains(&stage_ref(x, "apiId")))
            .filter_map(|x| self.api_stage_id(x))
            .map(|x| patch(PatchOp::Remove, "/apiStages", Some(x)))
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        self.send(
            &format!("remove API stages from usage plan {}", l.key),
            &st.path,
            self.client
                .update_usage_plan()
                .usage_plan_id(&id)
                .set_patch_operations(Some(ops))
                .send(),
        )
        .await?;
        Ok(())
    }

    async fn delete_usage_plan(&mut self, st: &Step) -> Result<()> {
        if let Some(id) = self.usage_plans.get(&st.key).cloned() {
            // A plan still associated with API stages cannot be deleted.
            let ops: Vec<PatchOperation> = self
                .live
                .get(st.path.as_str())
                .and_then(|l| l.value.get("apiStages"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|x| self.api_stage_id(x))
                .map(|x| patch(PatchOp::Remove, "/apiStages", Some(x)))
                .collect();
            let step = st.describe();
            if !ops.is_empty() {
                self.send(
                    &step,
                    &st.path,
                    self.client
                        .update_usage_plan()
                        .usage_plan_id(&id)
                        .set_patch_operations(Some(ops))
                        .send(),
                )
                .await?;
            }
            self.send(
                &step,
                &st.path,
                self.client.delete_usage_plan().usage_plan_id(&id).send(),
            )
            .await?;
            self.usage_plans.remove(&st.key);
        }
        self.mark(&st.path);
        Ok(())
    }

    async fn put_usage_plan(&mut self, st: &Step) -> Result<()> {
        let Some(e) = self.desired.get(st.path.as_str()).copied() else {
            return Ok(());
        };
        let v = &e.value;
        let step = st.describe();
        let c = self.client;
        let empty = vec![];
        let stages = v
            .get("apiStages")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let throttle = |t: &Value| {
            ThrottleSettings::builder()
                .set_burst_limit(int(t, "burstLimit"))
                .set_rate_limit(t.get("rateLimit").and_then(Value::as_f64))
                .build()
        };
        let (id, old) = match self.usage_plans.get(&e.key).cloned() {
            None => {
                let api_stages: Vec<ApiStage> = stages
                    .iter()
                    .filter_map(|x| {
                        let (api, stage) = self
                            .api_stage_id(x)?
                            .split_once(':')
                            .map(|(a, b)| (a.to_string(), b.to_string()))?;
                        let per_method = x.get("throttle").and_then(Value::as_object).map(|m| {
                            m.iter()
                                .map(|(k, t)| (k.clone(), throttle(t)))
                                .collect::<HashMap<_, _>>()
                        });
                        Some(
                            ApiStage::builder()
                                .api_id(api)
                                .stage(stage)
                                .set_throttle(per_method)
                                .build(),
                        )
                    })
                    .collect();
                let quota = v.get("quota").map(|q| {
                    QuotaSettings::builder()
                        .set_limit(int(q, "limit"))
                        .set_offset(int(q, "offset"))
                        .set_period(str_field(q, "period").map(QuotaPeriodType::from))
                        .build()
                });
                let out = self
                    .send(
                        &step,
                        &e.path,
                        c.create_usage_plan()
                            .name(str_field(v, "name").unwrap_or(&e.key))
                            .set_description(s(v, "description"))
                            .set_api_stages((!api_stages.is_empty()).then_some(api_stages))
                            .set_throttle(v.get("throttle").map(throttle))
                            .set_quota(quota)
                            .set_tags(str_map(v, "tags"))
                            .send(),
                    )
                    .await?;
                let id = out
                    .id()
                    .ok_or_else(|| self.fail(&step, &e.path, "the response has no id"))?
                    .to_string();
                self.usage_plans.insert(e.key.clone(), id.clone());
                if let Some(p) = s(v, "productCode") {
                    self.send(
                        &step,
                        &e.path,
                        c.update_usage_plan()
                            .usage_plan_id(&id)
                            .patch_operations(replace("/productCode", p))
                            .send(),
                    )
                    .await?;
                }
                (
                    id,
                    json!({"apiStages": v.get("apiStages").cloned().unwrap_or(json!([]))}),
                )
            }
            Some(id) => {
                let old = self
                    .live
                    .get(e.path.as_str())
                    .map_or(json!({}), |l| l.value.clone());
                let mut ops = vec![];
                if old.get("description") != v.get("description") {
                    ops.push(replace(
                        "/description",
                        v.get("description").map(text).unwrap_or_default(),
                    ));
                }
                if old.get("productCode") != v.get("productCode") {
                    match s(v, "productCode") {
                        Some(p) => ops.push(replace("/productCode", p)),
                        None => ops.push(patch(PatchOp::Remove, "/productCode", None)),
                    }
                }
                for (group, fields) in [
                    ("throttle", &["burstLimit", "rateLimit"][..]),
                    ("quota", &["limit", "period", "offset"][..]),
                ] {
                    match v.get(group) {
                        None if old.get(group).is_some() => {
                            ops.push(patch(PatchOp::Remove, format!("/{group}"), None))
                        }
                        Some(n) => {
                            for f in fields {
                                if let Some(x) = n.get(*f) {
                                    if old.get(group).and_then(|o| o.get(*f)) != Some(x) {
                                        ops.push(replace(format!("/{group}/{f}"), text(x)));
                                    }
                                }
                            }
                        }
                        None => {}
                    }
                }
                let had: Vec<_> = old
                    .get("apiStages")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|x| stage_ref(x, "apiId"))
                    .collect();
                for x in stages {
                    if !had.contains(&stage_ref(x, "apiId")) {
                        if let Some(r) = self.api_stage_id(x) {
                            ops.push(patch(PatchOp::Add, "/apiStages", Some(r)));
                        }
                    }
                }
                if !ops.is_empty() {
                    self.send(
                        &step,
                        &e.path,
                        c.update_usage_plan()
                            .usage_plan_id(&id)
                            .set_patch_operations(Some(ops))
                            .send(),
                    )
                    .await?;
                }
                self.retag(&step, &e.path, &format!("/usageplans/{id}"), &old, v)
                    .await?;
                (id, old)
            }
        };
        // Per-method throttles of an API stage that already existed.
        let had_throttles: BTreeMap<_, _> = old
            .get("apiStages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|x| (stage_ref(x, "apiId"), x.get("throttle").cloned()))
            .collect();
        for x in stages {
            if let Some(t) = had_throttles.get(&stage_ref(x, "apiId")) {
                if *t != x.get("throttle").cloned() {
                    self.notes.push(format!(
                        "usage plan {}: the per-method throttles of API stage {} differ and are not restored (set them by hand)",
                        e.key,
                        self.api_stage_id(x).unwrap_or_default()
                    ));
                }
            }
        }

        // Keys.
        let members = |x: &Value| -> BTreeMap<String, String> {
            x.get("apiKeys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    Some((
                        s(m, "name")?,
                        s(m, "type").unwrap_or_else(|| "API_KEY".into()),
                    ))
                })
                .collect()
        };
        let live_members = self
            .live
            .get(e.path.as_str())
            .filter(|_| st.op != Op::Create)
            .map(|l| members(&l.value))
            .unwrap_or_default();
        let wanted = members(v);
        for (name, kind) in wanted
            .iter()
            .filter(|(n, _)| !live_members.contains_key(*n))
        {
            let key_id = self.keys.get(name).cloned().ok_or_else(|| {
                self.fail(
                    &step,
                    &e.path,
                    format!("its API key {name} is neither in the gateway nor in the snapshot"),
                )
            })?;
            self.send(
                &step,
                &e.path,
                c.create_usage_plan_key()
                    .usage_plan_id(&id)
                    .key_id(key_id)
                    .key_type(kind)
                    .send(),
            )
            .await?;
        }
        for name in live_members.keys().filter(|n| !wanted.contains_key(*n)) {
            let key_id = self
                .keys_before
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.clone());
            let sent = c
                .delete_usage_plan_key()
                .usage_plan_id(&id)
                .key_id(key_id)
                .send()
                .await;
            match sent {
                Ok(_) => {}
                // The key was deleted above, and its membership with it.
                Err(e) if e.code() == Some("NotFoundException") => {}
                Err(err) => {
                    let (answer, next) = failure(&err);
                    return Err(self.fail(&step, &e.path, format!("{answer}; {next}")));
                }
            }
        }
        self.mark(&e.path);
        Ok(())
    }

    /// Removes from a custom domain the base path mappings the snapshot's domain does not have.
    async fn domain_detach(&mut self, st: &Step) -> Result<()> {
        let (Some(l), Some(d)) = (
            self.live.get(st.path.as_str()).copied(),
            self.desired.get(st.path.as_str()).copied(),
        ) else {
            return Ok(());
        };
        let domain = str_field(&l.value, "domainName")
            .unwrap_or(&l.key)
            .to_string();
        let wanted = base_paths(&d.value);
        for bp in base_paths(&l.value)
            .keys()
            .filter(|bp| !wanted.contains_key(*bp))
        {
            self.send(
                &format!("delete base path mapping {bp} of {domain}"),
                &st.path,
                self.client
                    .delete_base_path_mapping()
                    .domain_name(&domain)
                    .base_path(bp)
                    .send(),
            )
            .await?;
        }
        Ok(())
    }

    async fn delete_domain(&mut self, st: &Step) -> Result<()> {
        self.send(
            &st.describe(),
            &st.path,
            self.client.delete_domain_name().domain_name(&st.key).send(),
        )
        .await?;
        self.mark(&st.path);
        Ok(())
    }

    async fn put_domain(&mut self, st: &Step) -> Result<()> {
        let Some(e) = self.desired.get(st.path.as_str()).copied() else {
            return Ok(());
        };
        let v = &e.value;
        let step = st.describe();
        let domain = str_field(v, "domainName").unwrap_or(&e.key).to_string();
        let c = self.client;
        let old = match self.live.get(e.path.as_str()).copied() {
            None => {
                let mtls = v.get("mutualTlsAuthentication").map(|m| {
                    MutualTlsAuthenticationInput::builder()
                        .set_truststore_uri(s(m, "truststoreUri"))
                        .set_truststore_version(s(m, "truststoreVersion"))
                        .build()
                });
                let out = self
                    .send(
                        &step,
                        &e.path,
                        c.create_domain_name()
                            .domain_name(&domain)
                            .set_certificate_name(s(v, "certificateName"))
                            .set_certificate_arn(s(v, "certificateArn"))
                            .set_regional_certificate_name(s(v, "regionalCertificateName"))
                            .set_regional_certificate_arn(s(v, "regionalCertificateArn"))
                            .set_endpoint_configuration(endpoint_configuration(v))
                            .set_security_policy(
                                str_field(v, "securityPolicy").map(SecurityPolicy::from),
                            )
                            .set_mutual_tls_authentication(mtls)
                            .set_ownership_verification_certificate_arn(s(
                                v,
                                "ownershipVerificationCertificateArn",
                            ))
                            .set_tags(str_map(v, "tags"))
                            .send(),
                    )
                    .await?;
                let target = out
                    .regional_domain_name()
                    .or(out.distribution_domain_name())
                    .unwrap_or("(see the domain in API Gateway)");
                self.notes.push(format!(
                    "custom domain {domain} was created anew: point its DNS record at {target}"
                ));
                json!({})
            }
            Some(l) => {
                let old = l.value.clone();
                let mut ops = vec![];
                for f in [
                    "certificateName",
                    "certificateArn",
                    "regionalCertificateName",
                    "regionalCertificateArn",
                    "securityPolicy",
                    "ownershipVerificationCertificateArn",
                ] {
                    if old.get(f) != v.get(f) {
                        if let Some(x) = v.get(f) {
                            ops.push(replace(format!("/{f}"), text(x)));
                        }
                    }
                }
                let types = |x: &Value| {
                    x.pointer("/endpointConfiguration/types/0")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                if let (Some(o), Some(n)) = (types(&old), types(v)) {
                    if o != n {
                        ops.push(replace(format!("/endpointConfiguration/types/{o}"), n));
                    }
                }
                if old.get("mutualTlsAuthentication") != v.get("mutualTlsAuthentication") {
                    if let Some(u) = v.pointer("/mutualTlsAuthentication/truststoreUri") {
                        ops.push(replace("/mutualTlsAuthentication/truststoreUri", text(u)));
                    }
                    if let Some(u) = v.pointer("/mutualTlsAuthentication/truststoreVersion") {
                        ops.push(replace(
                            "/mutualTlsAuthentication/truststoreVersion",
                            text(u),
                        ));
                    }
                }
                if !ops.is_empty() {
                    self.send(
                        &step,
                        &e.path,
                        c.update_domain_name()
                            .domain_name(&domain)
                            .set_patch_operations(Some(ops))
                            .send(),
                    )
                    .await?;
                }
                self.retag(&step, &e.path, &format!("/domainnames/{domain}"), &old, v)
                    .await?;
                old
            }
        };
        let had = base_paths(&old);
        for (bp, m) in base_paths(v) {
            let (api, stage) = stage_ref(&m, "restApiId");
            let api_id = match (s(&m, "api"), s(&m, "restApiId")) {
                (Some(name), _) => self.apis.get(&name).cloned(),
                (None, raw) => raw,
            };
            let api_id = api_id.ok_or_else(|| {
                self.fail(
                    &step,
                    &e.path,
                    format!(
                        "base path {bp} maps to REST API {}, which is neither in the gateway nor in the snapshot",
                        api.as_deref().unwrap_or("?")
                    ),
                )
            })?;
            match had.get(&bp) {
                None => {
                    self.send(
                        &format!("create base path mapping {bp} of {domain}"),
                        &e.path,
                        c.create_base_path_mapping()
                            .domain_name(&domain)
                            .set_base_path((bp != "(none)").then(|| bp.clone()))
                            .rest_api_id(&api_id)
                            .set_stage(stage.clone())
                            .send(),
                    )
                    .await?;
                }
                Some(o) if stage_ref(o, "restApiId") != (api.clone(), stage.clone()) => {
                    let mut ops = vec![replace("/restapiId", api_id.clone())];
                    if let Some(st) = &stage {
                        ops.push(replace("/stage", st.clone()));
                    }
                    self.send(
                        &format!("update base path mapping {bp} of {domain}"),
                        &e.path,
                        c.update_base_path_mapping()
                            .domain_name(&domain)
                            .base_path(&bp)
                            .set_patch_operations(Some(ops))
                            .send(),
                    )
                    .await?;
                }
                Some(_) => {}
            }
        }
        self.mark(&e.path);
        Ok(())
    }

    async fn put_account(&mut self, st: &Step) -> Result<()> {
        let (Some(d), old) = (
            self.desired.get(st.path.as_str()).copied(),
            self.live.get(st.path.as_str()).map(|l| l.value.clone()),
        ) else {
            return Ok(());
        };
        let old = old.unwrap_or_else(|| json!({}));
        let v = &d.value;
        let mut ops = vec![];
        if old.get("cloudwatchRoleArn") != v.get("cloudwatchRoleArn") {
            ops.push(replace(
                "/cloudwatchRoleArn",
                v.get("cloudwatchRoleArn").map(text).unwrap_or_default(),
            ));
        }
        let (of, nf) = (
            strs(&old, "features").unwrap_or_default(),
            strs(v, "features").unwrap_or_default(),
        );
        for f in nf.iter().filter(|f| !of.contains(f)) {
            ops.push(patch(PatchOp::Add, "/features", Some(f.clone())));
        }
        if of.iter().any(|f| !nf.contains(f)) {
            self.notes.push(
                "account: it has features the snapshot does not; API Gateway does not let them be turned off".into(),
            );
        }
        if !ops.is_empty() {
            self.send(
                &st.describe(),
                &st.path,
                self.client
                    .update_account()
                    .set_patch_operations(Some(ops))
                    .send(),
            )
            .await?;
        }
        self.mark(&st.path);
        Ok(())
    }
}

/// The base path mappings of a domain entity, by base path.
fn base_paths(v: &Value) -> BTreeMap<String, Value> {
    v.get("basePathMappings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| Some((s(m, "basePath")?, m.clone())))
        .collect()
}

/// The location of a documentation part entity.
fn documentation_location(v: &Value) -> std::result::Result<DocumentationPartLocation, String> {
    let l = v.get("location").cloned().unwrap_or(Value::Null);
    DocumentationPartLocation::builder()
        .set_type(str_field(&l, "type").map(DocumentationPartType::from))
        .set_path(s(&l, "path"))
        .set_method(s(&l, "method"))
        .set_status_code(s(&l, "statusCode"))
        .set_name(s(&l, "name"))
        .build()
        .map_err(|e| format!("its location is incomplete ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops_text(ops: &[PatchOperation]) -> Vec<String> {
        ops.iter()
            .map(|o| {
                format!(
                    "{} {} {}",
                    o.op().map(|x| x.as_str()).unwrap_or("?"),
                    o.path().unwrap_or(""),
                    o.value().unwrap_or("")
                )
                .trim_end()
                .to_string()
            })
            .collect()
    }

    #[test]
    fn stage_patches_cover_pointer_variables_settings_and_logs() {
        let old = json!({"stageName": "prod", "deploymentId": "d1", "description": "",
            "variables": {"timeout": "10", "gone": "x"},
            "methodSettings": {"*/*": {"metricsEnabled": false, "throttlingRateLimit": 1000.0},
                               "~1old/GET": {"metricsEnabled": true}},
            "accessLogSettings": {"destinationArn": "arn:a", "format": "f"}});
        let new = json!({"stageName": "prod", "deploymentId": "d0", "description": "Prod",
            "variables": {"timeout": "29", "backend": "orders.internal"},
            "methodSettings": {"*/*": {"metricsEnabled": true, "throttlingRateLimit": 1000.0,
                                       "someNewSetting": 1}},
            "canarySettings": {"percentTraffic": 5}});
        let (ops, notes) = stage_ops(&old, &new, Some("d9"));
        assert_eq!(
            ops_text(&ops),
            [
                "replace /deploymentId d9",
                "replace /description Prod",
                "replace /variables/backend orders.internal",
                "replace /variables/timeout 29",
                "remove /variables/gone",
                "replace /*/*/metrics/enabled true",
                "remove /~1old/GET",
                "remove /accessLogSettings",
            ]
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("canarySettings"), "{notes:?}");
        assert!(notes[1].contains("someNewSetting"), "{notes:?}");
        let (same, _) = stage_ops(&new, &new, None);
        assert!(same.is_empty());
    }

    #[test]
    fn adapt_moves_the_scope_and_keeps_what_the_snapshot_cannot_say() {
        let cap = |scope: &str, entities: Vec<Entity>| Capture {
            source: Source {
                kind: "aws".into(),
                endpoint: "aws".into(),
                scope: Some(scope.into()),
                version: None,
            },
            raw: BTreeMap::new(),
            entities,
        };
        let mut desired = cap(
            "111122223333/us-east-1",
            vec![
                Entity::new(
                    "aws/rest-apis/orders/authorizers",
                    "authorizer",
                    "jwt",
                    json!({"authorizerUri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:111122223333:function:auth/invocations"}),
                ),
                Entity::new("aws/api-keys", "api-key", "alice", json!({"name": "alice"})),
                Entity::new("aws/api-keys", "api-key", "bob", json!({"name": "bob"})),
                Entity::new(
                    "aws",
                    "account",
                    "account",
                    json!({"throttleSettings": {"burstLimit": 5000}, "apiKeyVersion": "4"}),
                ),
            ],
        );
        let live = cap(
            "444455556666/eu-west-1",
            vec![
                Entity::new(
                    "aws/api-keys",
                    "api-key",
                    "alice",
                    json!({"name": "alice", "value": "v".repeat(30)}),
                )
                .secret(&["/value"]),
                Entity::new(
                    "aws",
                    "account",
                    "account",
                    json!({"throttleSettings": {"burstLimit": 100}, "apiKeyVersion": "4"}),
                ),
            ],
        );
        let rewrites = adapt(&mut desired, &live);
        let got: Vec<(String, String, String, usize)> = rewrites
            .iter()
            .map(|w| (w.what.clone(), w.from.clone(), w.to.clone(), w.count))
            .collect();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(
            (got[0].1.as_str(), got[0].2.as_str(), got[0].3),
            ("us-east-1", "eu-west-1", 2)
        );
        assert_eq!(
            (got[1].1.as_str(), got[1].2.as_str(), got[1].3),
            ("111122223333", "444455556666", 1)
        );
        assert!(got[2].0.contains("the target's are kept"), "{got:?}");
        assert!(got[3].0.contains("random values"), "{got:?}");
        assert!(got[4].0.contains("throttle"), "{got:?}");
        let uri = desired.entities[0].value["authorizerUri"].as_str().unwrap();
        assert!(
            uri.contains("eu-west-1") && !uri.contains("us-east-1"),
            "{uri}"
        );
        assert_eq!(desired.entities[1].value["value"], "v".repeat(30));
        assert_eq!(desired.entities[1].secrets, ["/value"]);
        let bob = desired.entities[2].value["value"].as_str().unwrap();
        assert!(
            bob.len() == 40 && bob.chars().all(|c| c.is_ascii_alphanumeric()),
            "{bob}"
        );
        assert_eq!(desired.entities[2].secrets, ["/value"]);
        assert_eq!(
            desired.entities[3].value["throttleSettings"]["burstLimit"],
            100
        );
        // Once adapted, nothing is left to rewrite.
        let mut again = desired.clone();
        again.source.scope = live.source.scope.clone();
        assert!(adapt(&mut again, &live).is_empty());
    }

    #[test]
    fn api_folders_and_partitions() {
        assert_eq!(
            api_dir("aws/rest-apis/orders/stages/prod.json"),
            Some("aws/rest-apis/orders")
        );
        assert_eq!(api_dir("aws/usage-plans/gold.json"), None);
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition("eu-west-1"), "aws");
    }
}
