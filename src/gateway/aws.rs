//! AWS API Gateway (REST APIs, v1): reads every REST API of an account and region through the AWS
//! SDK and lays it out as canonical entities, plus each stage's OpenAPI export as a raw document.
//!
//! The OpenAPI export alone misses stages, stage variables, method settings, deployments, usage plans,
//! API keys, custom domains and VPC links, so the capture reads the control-plane API itself:
//!
//! - `aws/rest-apis/<api>/api.json`, and below it `resources/<path>.json`,
//!   `methods/<METHOD> <path>.json` (with integration, method and integration responses),
//!   `models/`, `request-validators/`, `authorizers/`, `gateway-responses/`, `stages/`,
//!   `deployments/<id>.json` and `documentation-parts/`;
//! - account level: `aws/usage-plans/`, `aws/api-keys/`, `aws/domain-names/` (with base-path
//!   mappings), `aws/vpc-links/` and `aws/account.json`;
//! - `raw/aws-<api>@<stage>.<openapi|swagger>.json`: the export of each stage.
//!
//! Surrogate ids (`restApiId`, `resourceId`, authorizer, validator, VPC link and API key ids) are
//! replaced by the natural keys they point at; deployment ids are the deployments' identity and stay.
//! Where two objects share a name (AWS allows it), both are keyed `<name>@<id>`.
//!
//! The SDK's model types carry no serde support, and a hand mapping of some forty shapes would
//! silently drop every field AWS adds later. So a small interceptor (`BodyTap`) keeps the JSON body
//! of each response: the SDK still signs, retries and validates it (a body it cannot parse is an
//! error), and the capture keeps every field the service returned.
//!
//! Credentials come only from the AWS SDK's default chain (environment, profile files, web identity,
//! container and instance metadata); they are never logged. The runtime is a current-thread tokio
//! runtime that lives for one capture: the rest of gatevault is synchronous.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_apigateway::config::http::HttpResponse;
use aws_sdk_apigateway::config::interceptors::AfterDeserializationInterceptorContextRef;
use aws_sdk_apigateway::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_apigateway::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_apigateway::Client;
use serde_json::{json, Map, Value};

use super::canonical::{self, drop_fields, sort_set, str_field};
use super::{Capture, Entity, GatewayOptions, Source};
use crate::error::{Error, Result};

/// Largest page the list operations accept.
pub(crate) const PAGE_SIZE: i32 = 500;

/// Pages read from one list before the capture gives up (a service that keeps handing out new
/// positions would otherwise loop forever): 10,000 pages of 500.
const MAX_PAGES: usize = 10_000;

/// How long the account lookup (STS `GetCallerIdentity`) may take before the scope says `unknown`.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(10);

/// Fields that describe the state of an object rather than its configuration.
const STATUS_FIELDS: &[&str] = &[
    "apiStatus",
    "apiStatusMessage",
    "cacheClusterStatus",
    "domainNameStatus",
    "domainNameStatusMessage",
    "status",
    "statusMessage",
];

/// Captures the REST APIs and account-level API Gateway objects of one account and region.
///
/// # Errors
/// [`Error::Gateway`] when the endpoint cannot be reached, the credentials are missing or refused,
/// the service keeps throttling after the SDK's retries, or a response cannot be understood. Nothing
/// is returned on failure: a capture is complete or absent.
pub fn capture(opts: &GatewayOptions) -> Result<Capture> {
    let rt = runtime(opts)?;
    rt.block_on(async { connect(opts).await?.capture(opts).await })
}

/// A current-thread runtime for the SDK, which lives as long as one capture or restore.
///
/// # Errors
/// [`Error::Gateway`] when the process cannot start one (thread or descriptor limits).
pub(crate) fn runtime(opts: &GatewayOptions) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::gateway(
                endpoint_name(opts),
                format!("cannot start the runtime for the AWS SDK: {e}; check the process limits (threads, file descriptors) and run again"),
            )
        })
}

/// The endpoint as the source records it: the override URL, or `aws` for the public endpoints.
fn endpoint_name(opts: &GatewayOptions) -> String {
    opts.endpoint.clone().unwrap_or_else(|| "aws".into())
}

/// A configured API Gateway client for one account and region: what a capture reads through, and
/// what a restore (`crate::recovery::aws`) writes through.
pub(crate) struct Connection {
    /// The SDK client (with the body tap installed).
    pub(crate) client: Client,
    /// The region the client talks to.
    pub(crate) region: String,
    /// The endpoint as the source records it.
    pub(crate) endpoint: String,
    sdk: aws_config::SdkConfig,
    tap: BodyTap,
}

/// Configures the SDK from its default chain, with `--region` and `--endpoint` on top.
///
/// # Errors
/// [`Error::Gateway`] when no region is configured.
pub(crate) async fn connect(opts: &GatewayOptions) -> Result<Connection> {
    let endpoint = endpoint_name(opts);
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(r) = &opts.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(url) = &opts.endpoint {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let Some(region) = sdk.region().map(|r| r.to_string()) else {
        return Err(Error::gateway(
            format!("aws at {endpoint}"),
            "no AWS region is configured: pass --region, or set AWS_REGION or a region in the AWS profile",
        ));
    };
    let tap = BodyTap::default();
    let conf = aws_sdk_apigateway::config::Builder::from(&sdk)
        .interceptor(tap.clone())
        .build();
    Ok(Connection {
        client: Client::from_conf(conf),
        region,
        endpoint,
        sdk,
        tap,
    })
}

impl Connection {
    /// For messages: `aws at <endpoint> (<region>)`.
    pub(crate) fn describe(&self) -> String {
        format!("aws at {} ({})", self.endpoint, self.region)
    }

    /// A reader of JSON responses through this connection.
    pub(crate) fn reader(&self) -> Reader {
        Reader {
            client: self.client.clone(),
            tap: self.tap.clone(),
            describe: self.describe(),
        }
    }

    /// Captures everything, as [`capture`] does.
    async fn capture(&self, opts: &GatewayOptions) -> Result<Capture> {
        let mut capture = self.reader().read_all(opts).await?;
        let account = account_id(&self.sdk).await;
        capture.source = Source {
            kind: "aws".into(),
            endpoint: self.endpoint.clone(),
            scope: Some(format!(
                "{}/{}",
                account.as_deref().unwrap_or("unknown"),
                self.region
            )),
            version: None,
        };
        Ok(capture)
    }

    /// The entities of the REST API `id`, keyed `key`, exactly as a capture lays them out.
    ///
    /// # Errors
    /// As [`capture`].
    pub(crate) async fn read_rest_api(&self, key: &str, id: &str) -> Result<Vec<Entity>> {
        let reader = self.reader();
        let links = reader
            .list("list VPC links", |p| {
                self.client
                    .get_vpc_links()
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (_, link_names) = reader.keyed(links, "name", "VPC link")?;
        let mut value = reader
            .json(
                &format!("read REST API {key}"),
                self.client.get_rest_api().rest_api_id(id).send(),
            )
            .await?;
        strip_nulls(&mut value);
        let api = Api {
            key: key.to_string(),
            id: id.to_string(),
            value,
        };
        let mut entities = vec![];
        let mut raw = BTreeMap::new();
        reader
            .read_api(&api, &link_names, &mut entities, &mut raw)
            .await?;
        Ok(entities)
    }
}

/// The account id from STS, or `None` when STS cannot tell (an emulator without STS, an endpoint
/// override that only serves API Gateway, a policy denying `GetCallerIdentity`).
async fn account_id(sdk: &aws_config::SdkConfig) -> Option<String> {
    let sts = aws_sdk_sts::Client::new(sdk);
    match tokio::time::timeout(IDENTITY_TIMEOUT, sts.get_caller_identity().send()).await {
        Ok(Ok(out)) => out.account().map(str::to_string),
        Ok(Err(e)) => {
            tracing::debug!("account id unknown: {}", causes(&e));
            None
        }
        Err(_) => {
            tracing::debug!("account id unknown: STS did not answer in time");
            None
        }
    }
}

/// Keeps the JSON body of the last response the SDK deserialized, so that the capture sees every
/// field, including those this SDK version has no model for.
#[derive(Clone, Debug, Default)]
struct BodyTap(Arc<Mutex<Option<Vec<u8>>>>);

impl BodyTap {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().map(|mut b| b.take()).unwrap_or(None)
    }
}

impl Intercept for BodyTap {
    fn name(&self) -> &'static str {
        "gatevault::BodyTap"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let body = context.response().body().bytes().map(<[u8]>::to_vec);
        if let Ok(mut slot) = self.0.lock() {
            *slot = body;
        }
        Ok(())
    }
}

/// Surrogate id to natural key, per kind of object.
#[derive(Default)]
pub(crate) struct Names(HashMap<String, String>);

impl Names {
    pub(crate) fn get(&self, id: &str) -> Option<&str> {
        self.0.get(id).map(String::as_str)
    }

    /// Every (id, key) pair.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(i, k)| (i.as_str(), k.as_str()))
    }
}

/// One REST API as listed: its key, id and raw description.
struct Api {
    key: String,
    id: String,
    value: Value,
}

pub(crate) struct Reader {
    client: Client,
    tap: BodyTap,
    describe: String,
}

impl Reader {
    async fn read_all(&self, opts: &GatewayOptions) -> Result<Capture> {
        let mut entities = vec![];
        let mut raw = BTreeMap::new();

        let vpc_links = self
            .list("list VPC links", |p| {
                self.client
                    .get_vpc_links()
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (vpc_links, link_names) = self.keyed(vpc_links, "name", "VPC link")?;
        for (key, mut v) in vpc_links {
            clean(&mut v, &["id"]);
            sort_set(&mut v, "targetArns");
            entities.push(Entity::new("aws/vpc-links", "vpc-link", &key, v));
        }

        let apis = self
            .list("list REST APIs", |p| {
                self.client
                    .get_rest_apis()
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (apis, api_names) = self.keyed(apis, "name", "REST API")?;
        let apis = apis
            .into_iter()
            .map(|(key, value)| {
                Ok(Api {
                    id: self.id_of(&value, "REST API", &key)?,
                    key,
                    value,
                })
            })
            .collect::<Result<Vec<Api>>>()?;
        for api in &apis {
            self.read_api(api, &link_names, &mut entities, &mut raw)
                .await?;
        }

        let keys = self
            .list("list API keys", |p| {
                self.client
                    .get_api_keys()
                    .limit(PAGE_SIZE)
                    .include_values(opts.include_secret_values)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (keys, key_names) = self.keyed(keys, "name", "API key")?;
        for (key, v) in keys {
            entities.push(api_key_entity(
                &key,
                v,
                &api_names,
                opts.include_secret_values,
            ));
        }

        let plans = self
            .list("list usage plans", |p| {
                self.client
                    .get_usage_plans()
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (plans, _) = self.keyed(plans, "name", "usage plan")?;
        for (key, v) in plans {
            let plan_id = self.id_of(&v, "usage plan", &key)?;
            let members = self
                .list(&format!("list the keys of usage plan {key}"), |p| {
                    self.client
                        .get_usage_plan_keys()
                        .usage_plan_id(&plan_id)
                        .limit(PAGE_SIZE)
                        .set_position(p)
                        .send()
                })
                .await?;
            entities.push(usage_plan_entity(&key, v, &members, &key_names, &api_names));
        }

        let domains = self
            .list("list custom domain names", |p| {
                self.client
                    .get_domain_names()
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (domains, _) = self.keyed(domains, "domainName", "custom domain name")?;
        for (key, v) in domains {
            let domain = str_field(&v, "domainName").unwrap_or(&key).to_string();
            let mappings = self
                .list(&format!("list the base path mappings of {domain}"), |p| {
                    self.client
                        .get_base_path_mappings()
                        .domain_name(&domain)
                        .limit(PAGE_SIZE)
                        .set_position(p)
                        .send()
                })
                .await?;
            entities.push(domain_name_entity(&key, v, mappings, &api_names));
        }

        let mut account = self
            .json(
                "read the account settings",
                self.client.get_account().send(),
            )
            .await?;
        clean(&mut account, &[]);
        sort_set(&mut account, "features");
        entities.push(Entity::new("aws", "account", "account", account));

        Ok(Capture {
            source: Source::new("aws", "aws"),
            raw,
            entities,
        })
    }

    /// Reads one REST API and everything below it.
    async fn read_api(
        &self,
        api: &Api,
        link_names: &Names,
        entities: &mut Vec<Entity>,
        raw: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<()> {
        let dir = format!("aws/rest-apis/{}", canonical::file_name(&api.key));
        let id = api.id.as_str();
        let name = &api.key;

        let mut v = api.value.clone();
        clean(&mut v, &["id", "rootResourceId"]);
        sort_set(&mut v, "binaryMediaTypes");
        if let Some(ec) = v.get_mut("endpointConfiguration") {
            sort_set(ec, "types");
            sort_set(ec, "vpcEndpointIds");
        }
        entities.push(Entity {
            path: format!("{dir}/api.json"),
            ..Entity::new(&dir, "rest-api", name, v)
        });

        let validators = self
            .list(&format!("list the request validators of {name}"), |p| {
                self.client
                    .get_request_validators()
                    .rest_api_id(id)
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (validators, validator_names) = self.keyed(validators, "name", "request validator")?;
        push_cleaned(
            entities,
            validators,
            &format!("{dir}/request-validators"),
            "request-validator",
            &["id"],
        );

        let authorizers = self
            .list(&format!("list the authorizers of {name}"), |p| {
                self.client
                    .get_authorizers()
                    .rest_api_id(id)
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (authorizers, authorizer_names) = self.keyed(authorizers, "name", "authorizer")?;
        for (key, mut v) in authorizers {
            clean(&mut v, &["id"]);
            sort_set(&mut v, "providerARNs");
            entities.push(Entity::new(
                &format!("{dir}/authorizers"),
                "authorizer",
                &key,
                v,
            ));
        }

        let models = self
            .list(&format!("list the models of {name}"), |p| {
                self.client
                    .get_models()
                    .rest_api_id(id)
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (models, _) = self.keyed(models, "name", "model")?;
        push_cleaned(entities, models, &format!("{dir}/models"), "model", &["id"]);

        let resources = self
            .list(&format!("list the resources of {name}"), |p| {
                self.client
                    .get_resources()
                    .rest_api_id(id)
                    .embed("methods")
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (resources, _) = self.keyed(resources, "path", "resource")?;
        let refs = MethodRefs {
            authorizers: &authorizer_names,
            validators: &validator_names,
            vpc_links: link_names,
        };
        entities.extend(resource_entities(&dir, resources, &refs));

        let responses = self
            .list(&format!("list the gateway responses of {name}"), |p| {
                self.client
                    .get_gateway_responses()
                    .rest_api_id(id)
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (responses, _) = self.keyed(responses, "responseType", "gateway response")?;
        push_cleaned(
            entities,
            responses,
            &format!("{dir}/gateway-responses"),
            "gateway-response",
            &[],
        );

        let deployments = self
            .list(&format!("list the deployments of {name}"), |p| {
                self.client
                    .get_deployments()
                    .rest_api_id(id)
                    .limit(PAGE_SIZE)
                    .set_position(p)
                    .send()
            })
            .await?;
        let (deployments, _) = self.keyed(deployments, "id", "deployment")?;
        push_cleaned(
            entities,
            deployments,
            &format!("{dir}/deployments"),
            "deployment",
            &[],
        );

        // Stages are not paginated: GetStages returns them all.
        let stages = self
            .json(
                &format!("list the stages of {name}"),
                self.client.get_stages().rest_api_id(id).send(),
            )
            .await?;
        let stages = self.items(stages, &format!("stages of {name}"))?;
        let (stages, _) = self.keyed(stages, "stageName", "stage")?;
        for (key, mut v) in stages {
            clean(&mut v, &[]);
            let stage = str_field(&v, "stageName").unwrap_or(&key).to_string();
            entities.push(Entity::new(&format!("{dir}/stages"), "stage", &key, v));
            let (fmt, doc) = self.export(api, &stage).await?;
            raw.insert(format!("aws-{name}@{stage}.{fmt}.json"), doc);
        }

        if let Some(parts) = self.documentation_parts(api).await? {
            push_cleaned(
                entities,
                parts,
                &format!("{dir}/documentation-parts"),
                "documentation-part",
                &["id"],
            );
        }
        Ok(())
    }

    /// The documentation parts of `api`, keyed by their location, or `None` where the endpoint does
    /// not implement them (moto answers 404 without an AWS error code).
    async fn documentation_parts(&self, api: &Api) -> Result<Option<Vec<(String, Value)>>> {
        let what = format!("list the documentation parts of {}", api.key);
        let mut out = vec![];
        let mut position: Option<String> = None;
        for _ in 0..MAX_PAGES {
            self.tap.take();
            let sent = self
                .client
                .get_documentation_parts()
                .rest_api_id(&api.id)
                .limit(PAGE_SIZE)
                .set_position(position.clone())
                .send()
                .await;
            if let Err(SdkError::ServiceError(s)) = &sent {
                if s.raw().status().as_u16() == 404 && s.err().code() != Some("NotFoundException") {
                    tracing::warn!(
                        "{}: the endpoint does not serve documentation parts; they are not captured",
                        self.describe
                    );
                    return Ok(None);
                }
            }
            let page = self.body(&what, sent)?;
            let next = str_field(&page, "position").map(str::to_string);
            for mut part in self.items(page, &what)? {
                let location = part.get("location").cloned().unwrap_or(Value::Null);
                let key = ["type", "path", "method", "statusCode", "name"]
                    .iter()
                    .filter_map(|f| str_field(&location, f))
                    .collect::<Vec<_>>()
                    .join(" ");
                strip_nulls(&mut part);
                out.push((key, part));
            }
            if next.is_none() || next == position {
                let (parts, _) = self.keyed_by(out, "documentation part")?;
                return Ok(Some(parts));
            }
            position = next;
        }
        Err(self.too_many_pages(&what))
    }

    /// The export of `stage` of `api`: OpenAPI 3 with the API Gateway extensions where the service
    /// gives it, with the fields that change on every call (`info.version`) removed.
    async fn export(&self, api: &Api, stage: &str) -> Result<(&'static str, Vec<u8>)> {
        let what = format!("export stage {stage} of {}", api.key);
        let out = self
            .client
            .get_export()
            .rest_api_id(&api.id)
            .stage_name(stage)
            .export_type("oas30")
            .parameters("extensions", "apigateway")
            .accepts("application/json")
            .send()
            .await
            .map_err(|e| self.sdk_error(&what, &e))?;
        let body = out.body().map(|b| b.as_ref()).unwrap_or_default();
        canonical_export(body).map_err(|why| self.malformed(&what, why))
    }

    /// Sends one request and returns its JSON body.
    async fn json<T, E>(
        &self,
        what: &str,
        sent: impl Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<Value>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.tap.take();
        let sent = sent.await;
        self.body(what, sent)
    }

    /// The JSON body the tap kept for a response the SDK accepted.
    fn body<T, E>(
        &self,
        what: &str,
        sent: std::result::Result<T, SdkError<E, HttpResponse>>,
    ) -> Result<Value>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        sent.map_err(|e| self.sdk_error(what, &e))?;
        let bytes = self
            .tap
            .take()
            .ok_or_else(|| self.malformed(what, "the response had no body"))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| self.malformed(what, format!("the response is not JSON ({e})")))
    }

    /// Reads every page of a list operation; `page` sends the request for one position.
    pub(crate) async fn list<T, E, F, Fut>(&self, what: &str, mut page: F) -> Result<Vec<Value>>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut out = vec![];
        let mut position: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let v = self.json(what, page(position.clone())).await?;
            let next = str_field(&v, "position").map(str::to_string);
            out.extend(self.items(v, what)?);
            if next.is_none() || next == position {
                return Ok(out);
            }
            position = next;
        }
        Err(self.too_many_pages(what))
    }

    /// The `item` list of a list response (absent when empty).
    fn items(&self, v: Value, what: &str) -> Result<Vec<Value>> {
        list_items(v).map_err(|why| self.malformed(what, why))
    }

    /// Keys `items` as [`Reader::keyed`] does and maps each key to the object's id (what a restore
    /// needs to address the objects it changes).
    ///
    /// # Errors
    /// [`Error::Gateway`] when an item has no `field`, or two share a key and one has no id.
    pub(crate) fn ids_by_key(
        &self,
        items: Vec<Value>,
        field: &str,
        kind: &str,
    ) -> Result<BTreeMap<String, String>> {
        let (keyed, _) = self.keyed(items, field, kind)?;
        Ok(keyed
            .into_iter()
            .filter_map(|(k, v)| str_field(&v, "id").map(|id| (k, id.to_string())))
            .collect())
    }

    /// Keys `items` by their field `field`, returning them with the id-to-key map.
    fn keyed(
        &self,
        items: Vec<Value>,
        field: &str,
        kind: &str,
    ) -> Result<(Vec<(String, Value)>, Names)> {
        keyed(items, field, kind).map_err(|why| self.malformed(&format!("list {kind}s"), why))
    }

    /// Makes the keys of `keyed` unique, as [`keyed_by`] does.
    fn keyed_by(
        &self,
        keyed: Vec<(String, Value)>,
        kind: &str,
    ) -> Result<(Vec<(String, Value)>, Names)> {
        keyed_by(keyed, kind).map_err(|why| self.malformed(&format!("list {kind}s"), why))
    }

    /// The `id` of an object the capture reads further through it.
    fn id_of(&self, v: &Value, kind: &str, key: &str) -> Result<String> {
        str_field(v, "id").map(str::to_string).ok_or_else(|| {
            self.malformed(
                &format!("list {kind}s"),
                format!("{kind} {key:?} has no id"),
            )
        })
    }

    fn too_many_pages(&self, what: &str) -> Error {
        Error::gateway(
            &self.describe,
            format!("{what}: the service returned more than {MAX_PAGES} pages; report this with the endpoint's kind and version"),
        )
    }

    fn malformed(&self, what: &str, detail: impl std::fmt::Display) -> Error {
        Error::gateway(
            &self.describe,
            format!("{what}: malformed response: {detail}; check that the endpoint is an API Gateway (REST API) endpoint, then run again"),
        )
    }

    /// Turns an SDK error into a gateway error that says what to do next.
    fn sdk_error<E>(&self, what: &str, e: &SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let detail = causes(e);
        let credentials = detail.to_ascii_lowercase().contains("credential");
        let reason = match e {
            SdkError::ServiceError(s) => service_reason(
                what,
                s.raw().status().as_u16(),
                e.code().unwrap_or(""),
                e.message().unwrap_or(""),
            ),
            _ if credentials => format!(
                "{what}: no usable AWS credentials ({detail}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, then run again"
            ),
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => format!(
                "{what}: cannot reach the endpoint ({detail}), after the SDK's retries; check the endpoint URL (--endpoint), the region and the network, then run again"
            ),
            SdkError::ResponseError(_) => {
                return self.malformed(what, detail);
            }
            _ => format!("{what}: {detail}; check the endpoint and the AWS configuration, then run again"),
        };
        Error::gateway(&self.describe, reason)
    }
}

/// The canonical export document of a stage, from the body `get-export` answered: the fields that
/// change on every call (`info.version`) removed, and whether it is `openapi` (3) or `swagger` (2).
///
/// # Errors
/// A message when the body is not JSON or not an OpenAPI or Swagger document.
pub(crate) fn canonical_export(
    body: &[u8],
) -> std::result::Result<(&'static str, Vec<u8>), String> {
    let mut doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the export is not JSON ({e})"))?;
    let fmt = if doc.get("openapi").is_some() {
        "openapi"
    } else if doc.get("swagger").is_some() {
        "swagger"
    } else {
        return Err(
            "the export is not an OpenAPI or Swagger document (no `openapi` or `swagger` field)"
                .into(),
        );
    };
    if let Some(info) = doc.get_mut("info") {
        drop_fields(info, &["version"]);
    }
    Ok((fmt, canonical::to_bytes(&doc)))
}

/// The `item` list of a list response (absent when empty).
///
/// # Errors
/// A message when `item` is not a list of objects.
pub(crate) fn list_items(mut v: Value) -> std::result::Result<Vec<Value>, String> {
    match v.get_mut("item").map(Value::take) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) if items.iter().all(Value::is_object) => Ok(items),
        Some(_) => Err("its item list is not a list of objects".into()),
    }
}

/// Keys `items` (of `kind`, for messages) by their field `field`, nulls removed, as [`keyed_by`] does.
///
/// # Errors
/// A message when an item has no `field`, or as [`keyed_by`].
pub(crate) fn keyed(
    items: Vec<Value>,
    field: &str,
    kind: &str,
) -> std::result::Result<(Vec<(String, Value)>, Names), String> {
    let mut keyed = Vec::with_capacity(items.len());
    for mut v in items {
        strip_nulls(&mut v);
        let Some(key) = str_field(&v, field).map(str::to_string) else {
            return Err(format!("a {kind} has no {field}"));
        };
        keyed.push((key, v));
    }
    keyed_by(keyed, kind)
}

/// Makes the keys of `keyed` unique (`<key>@<id>` where a key repeats), sorts by key and maps ids to
/// keys.
///
/// # Errors
/// A message when two objects share a key and one has no id.
pub(crate) fn keyed_by(
    mut keyed: Vec<(String, Value)>,
    kind: &str,
) -> std::result::Result<(Vec<(String, Value)>, Names), String> {
    let mut count: HashMap<String, usize> = HashMap::new();
    for (k, _) in &keyed {
        *count.entry(k.clone()).or_default() += 1;
    }
    let mut names = Names::default();
    for (k, v) in keyed.iter_mut() {
        let id = str_field(v, "id").map(str::to_string);
        if count[k.as_str()] > 1 {
            let Some(id) = &id else {
                return Err(format!("two {kind}s are named {k:?} and one has no id"));
            };
            *k = format!("{k}@{id}");
        }
        if let Some(id) = id {
            names.0.insert(id, k.clone());
        }
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((keyed, names))
}

/// The entities of the resources of one REST API (keyed by path, methods embedded) under `dir`:
/// each resource without its methods, and each method as `<VERB> <path>` in canonical form.
pub(crate) fn resource_entities(
    dir: &str,
    resources: Vec<(String, Value)>,
    refs: &MethodRefs<'_>,
) -> Vec<Entity> {
    let mut entities = vec![];
    for (path, mut v) in resources {
        let resource_id = str_field(&v, "id").unwrap_or_default().to_string();
        let methods = match v.get_mut("resourceMethods").map(Value::take) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        clean(&mut v, &["id", "parentId", "resourceMethods"]);
        entities.push(Entity::new(
            &format!("{dir}/resources"),
            "resource",
            &path,
            v,
        ));
        for (verb, mut m) in methods {
            canonical_method(&mut m, &path, &resource_id, refs);
            let key = format!("{verb} {path}");
            entities.push(Entity::new(&format!("{dir}/methods"), "method", &key, m));
        }
    }
    entities
}

/// What a method's ids point at.
pub(crate) struct MethodRefs<'a> {
    pub(crate) authorizers: &'a Names,
    pub(crate) validators: &'a Names,
    pub(crate) vpc_links: &'a Names,
}

/// Canonical form of one method of the resource at `path` (id `resource_id`), integration and
/// responses included: ids become names, set-like lists are sorted, the resource path is recorded.
fn canonical_method(m: &mut Value, path: &str, resource_id: &str, refs: &MethodRefs<'_>) {
    strip_nulls(m);
    replace_id(m, "authorizerId", "authorizer", refs.authorizers);
    replace_id(m, "requestValidatorId", "requestValidator", refs.validators);
    sort_set(m, "authorizationScopes");
    if let Some(integration) = m.get_mut("methodIntegration") {
        if str_field(integration, "connectionType") == Some("VPC_LINK") {
            replace_id(integration, "connectionId", "connection", refs.vpc_links);
        }
        // The cache namespace defaults to the resource id: it is then no configuration.
        if str_field(integration, "cacheNamespace") == Some(resource_id) {
            drop_fields(integration, &["cacheNamespace"]);
        }
        sort_set(integration, "cacheKeyParameters");
    }
    if let Value::Object(o) = m {
        o.insert("resourcePath".into(), Value::String(path.to_string()));
    }
}

/// What failed and what to do, for a service that answered `status` with error `code`.
fn service_reason(what: &str, status: u16, code: &str, message: &str) -> String {
    let answer = [format!("HTTP {status}").as_str(), code, message]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    match (status, code) {
        (429, _) | (_, "TooManyRequestsException" | "ThrottlingException") => format!(
            "{what}: throttled by the service even after the SDK's retries (3 attempts with exponential backoff): {answer}; run again later, or allow more attempts with AWS_MAX_ATTEMPTS"
        ),
        (401 | 403, _)
        | (
            _,
            "UnrecognizedClientException"
            | "AccessDeniedException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "ExpiredTokenException"
            | "UnauthorizedException"
            | "MissingAuthenticationTokenException",
        ) => format!(
            "{what}: the credentials were refused ({answer}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), that they are for this account and region, and that they allow apigateway:GET"
        ),
        (404, _) => format!(
            "{what}: not found ({answer}); the object may have been deleted during the capture, or the endpoint is not API Gateway: run again, and check --endpoint"
        ),
        _ => format!(
            "{what}: the service answered {answer}; fix what it names, or run again if it was a transient fault"
        ),
    }
}

/// The messages of `e` and its sources, joined by `: `, without repeats (a wrapper often repeats
/// its source's message) and on one line.
pub(crate) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![];
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// The entity of the API key `v` (keyed `key`): without its id, its value unless
/// `include_secret_values`, stage keys naming their API where it is known (`api_names`), sorted.
pub(crate) fn api_key_entity(
    key: &str,
    mut v: Value,
    api_names: &Names,
    include_secret_values: bool,
) -> Entity {
    clean(&mut v, &["id"]);
    if !include_secret_values {
        drop_fields(&mut v, &["value"]);
    }
    if let Some(Value::Array(stage_keys)) = v.get_mut("stageKeys") {
        for s in stage_keys.iter_mut() {
            if let Some((api_id, stage)) = s.as_str().and_then(|s| s.split_once('/')) {
                if let Some(name) = api_names.get(api_id) {
                    *s = Value::String(format!("{name}/{stage}"));
                }
            }
        }
    }
    sort_set(&mut v, "stageKeys");
    let customer = str_field(&v, "customerId").map(str::to_string);
    let e = Entity::new("aws/api-keys", "api-key", key, v)
        .secret(&["/value"])
        .personal(&["/customerId"]);
    match customer {
        Some(c) => e.subject(format!("aws:customer={c}")),
        None => e,
    }
}

/// The entity of the usage plan `v` (keyed `key`) whose keys are `members` (as GetUsagePlanKeys
/// lists them): members by name (`key_names` maps API key ids to names) and type, sorted; API stages
/// naming their API where it is known (`api_names`), sorted; no ids.
pub(crate) fn usage_plan_entity(
    key: &str,
    mut v: Value,
    members: &[Value],
    key_names: &Names,
    api_names: &Names,
) -> Entity {
    let mut members: Vec<Value> = members
        .iter()
        .map(|m| {
            let id = str_field(m, "id").unwrap_or_default();
            let name = key_names
                .get(id)
                .or_else(|| str_field(m, "name"))
                .unwrap_or(id);
            let mut out = json!({ "name": name });
            if let Some(t) = m.get("type").filter(|t| t.is_string()) {
                out["type"] = t.clone();
            }
            out
        })
        .collect();
    members.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    clean(&mut v, &["id"]);
    if let Some(Value::Array(stages)) = v.get_mut("apiStages") {
        for s in stages.iter_mut() {
            replace_id(s, "apiId", "api", api_names);
        }
        stages.sort_by_key(|s| {
            (
                s.get("api")
                    .or_else(|| s.get("apiId"))
                    .map(canonical::scalar_key),
                str_field(s, "stage").map(str::to_string),
            )
        });
    }
    if let Value::Object(o) = &mut v {
        o.insert("apiKeys".into(), Value::Array(members));
    }
    Entity::new("aws/usage-plans", "usage-plan", key, v)
}

/// The entity of the custom domain name `v` (keyed `key`) with its base path `mappings`: without the
/// domain repeated in each mapping, mappings naming their API where it is known (`api_names`),
/// sorted by base path.
pub(crate) fn domain_name_entity(
    key: &str,
    mut v: Value,
    mut mappings: Vec<Value>,
    api_names: &Names,
) -> Entity {
    for m in mappings.iter_mut() {
        strip_nulls(m);
        // The domain is the parent's key (moto repeats it as `domain_name`).
        drop_fields(m, &["domainName", "domain_name"]);
        replace_id(m, "restApiId", "api", api_names);
    }
    mappings.sort_by_key(|m| str_field(m, "basePath").map(str::to_string));
    clean(&mut v, &[]);
    if let Value::Object(o) = &mut v {
        o.insert("basePathMappings".into(), Value::Array(mappings));
    }
    Entity::new("aws/domain-names", "domain-name", key, v)
}

/// Cleans each keyed object (dropping the fields `drop`) and adds it as an entity of `kind` in `dir`.
fn push_cleaned(
    entities: &mut Vec<Entity>,
    items: Vec<(String, Value)>,
    dir: &str,
    kind: &str,
    drop: &[&str],
) {
    for (key, mut v) in items {
        clean(&mut v, drop);
        entities.push(Entity::new(dir, kind, &key, v));
    }
}

/// Applies the common canonical rules to one object: nulls, volatile fields (top level only: deeper
/// down, names such as `etag` can be stage variables), state fields and `drop`.
fn clean(v: &mut Value, drop: &[&str]) {
    strip_nulls(v);
    drop_fields(v, canonical::VOLATILE);
    drop_fields(v, STATUS_FIELDS);
    drop_fields(v, drop);
}

/// Replaces the id at `field` by the natural key at `to`, where the id is known (an unknown id is
/// kept as it is: it points outside what the capture reads, such as another account).
fn replace_id(v: &mut Value, field: &str, to: &str, names: &Names) {
    let Value::Object(o) = v else { return };
    let Some(name) = o
        .get(field)
        .and_then(Value::as_str)
        .and_then(|id| names.get(id))
    else {
        return;
    };
    let name = Value::String(name.to_string());
    o.remove(field);
    o.insert(to.into(), name);
}

/// Removes null members of objects at every depth: AWS omits absent fields, emulators send nulls.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_names_where_known() {
        let mut names = Names::default();
        names.0.insert("a1".into(), "jwt".into());
        let mut m = json!({"authorizerId": "a1", "requestValidatorId": "zz"});
        replace_id(&mut m, "authorizerId", "authorizer", &names);
        replace_id(&mut m, "requestValidatorId", "requestValidator", &names);
        assert_eq!(m, json!({"authorizer": "jwt", "requestValidatorId": "zz"}));
    }

    #[test]
    fn methods_name_their_authorizer_validator_and_vpc_link() {
        let names =
            |id: &str, name: &str| Names(HashMap::from([(id.to_string(), name.to_string())]));
        let refs = MethodRefs {
            authorizers: &names("au1", "jwt"),
            validators: &names("rv1", "body-only"),
            vpc_links: &names("vl1", "orders-link"),
        };
        // The shape AWS returns for a method embedded in GetResources.
        let mut m = json!({
            "httpMethod": "GET", "authorizationType": "CUSTOM", "authorizerId": "au1",
            "requestValidatorId": "rv1", "authorizationScopes": ["b", "a"],
            "methodIntegration": {"type": "HTTP_PROXY", "connectionType": "VPC_LINK",
                "connectionId": "vl1", "cacheNamespace": "res1", "cacheKeyParameters": ["y", "x"]}
        });
        canonical_method(&mut m, "/orders", "res1", &refs);
        assert_eq!(
            m,
            json!({
                "httpMethod": "GET", "authorizationType": "CUSTOM", "authorizer": "jwt",
                "requestValidator": "body-only", "authorizationScopes": ["a", "b"],
                "resourcePath": "/orders",
                "methodIntegration": {"type": "HTTP_PROXY", "connectionType": "VPC_LINK",
                    "connection": "orders-link", "cacheKeyParameters": ["x", "y"]}
            })
        );
    }

    #[test]
    fn service_errors_say_what_to_do() {
        let throttled = service_reason(
            "list REST APIs",
            429,
            "TooManyRequestsException",
            "slow down",
        );
        assert!(throttled.contains("throttled"), "{throttled}");
        assert!(throttled.contains("SDK's retries"), "{throttled}");
        assert!(
            throttled.contains("HTTP 429 TooManyRequestsException slow down"),
            "{throttled}"
        );
        let refused = service_reason("list REST APIs", 400, "UnrecognizedClientException", "");
        assert!(
            refused.contains("credentials were refused (HTTP 400 UnrecognizedClientException)"),
            "{refused}"
        );
        let other = service_reason("list REST APIs", 500, "", "");
        assert!(other.contains("answered HTTP 500;"), "{other}");
    }

    #[test]
    fn causes_join_sources_once_on_one_line() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "dispatch failure")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("connection\nrefused"));
        assert_eq!(causes(&e), "dispatch failure: connection refused");
    }

    #[test]
    fn clean_drops_state_but_keeps_nested_names() {
        let mut v = json!({"createdDate": 1, "status": "AVAILABLE", "id": "x", "name": "n",
            "variables": {"etag": "kept", "gone": null}});
        clean(&mut v, &["id"]);
        assert_eq!(v, json!({"name": "n", "variables": {"etag": "kept"}}));
    }
}
