//! The object-store backend: S3 (and S3-compatible stores) and Azure Blob through the `object_store`
//! crate.
//!
//! The [`Backend`] trait is synchronous and the core of gatevault is too; `object_store` is async. Every
//! call is spawned onto one small tokio runtime owned by this module (shared by all instances in the
//! process) and the calling thread waits on a std channel for the answer. That works whether or not the
//! caller is itself inside another tokio runtime (the gateway clients are), because nothing here calls
//! `block_on` on the caller's thread. Several threads calling at once (the pack saver uploads in
//! parallel) get several requests in flight, up to [`Capabilities::concurrency`].
//!
//! Objects live at `<prefix>/<FileType::path_of(name)>`, the same layout as a local repository.
//! Create-only writes use the store's conditional put (`If-None-Match: *` on S3, `If-None-Match: *`
//! on Azure too); transient errors (5xx, timeouts, resets, truncated bodies) are retried by
//! `object_store`'s retry layer with exponential backoff and jitter, permanent ones (403, 404, 412)
//! come back at once. See `docs/backends.md` for locations, options and guarantees.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::limit::LimitStore;
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig,
};

use super::{not_found, Backend, BackendOptions, Capabilities, FileType};
use crate::error::{Error, Result};

/// Option keys an S3 location accepts (`-o KEY=VALUE`).
pub const S3_OPTIONS: &[&str] = &[
    "s3.region",
    "s3.profile",
    "s3.endpoint",
    "s3.path-style",
    "s3.bucket-lookup",
    "s3.connections",
    "s3.retries",
    "s3.timeout",
    "s3.retry-timeout",
    "s3.conditional-put",
    "s3.unsigned-payload",
    "s3.object-lock",
];

/// Option keys an Azure location accepts.
pub const AZURE_OPTIONS: &[&str] = &[
    "azure.account-name",
    "azure.account-key",
    "azure.sas-token",
    "azure.endpoint",
    "azure.endpoint-suffix",
    "azure.region",
    "azure.connections",
    "azure.retries",
    "azure.timeout",
    "azure.retry-timeout",
];

/// Requests in flight per repository unless `s3.connections`/`azure.connections` says otherwise.
pub const DEFAULT_CONNECTIONS: usize = 8;

/// The runtime every object-store request runs on.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 4);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("gatevault-io")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| {
        Error::io(
            "starting the network runtime",
            std::io::Error::other(e.clone()),
        )
    })
}

/// Runs `fut` on the backend runtime and waits for it on the calling thread. Safe to call from a
/// thread that is itself a worker of another tokio runtime; never call it from a task of this one.
///
/// # Errors
/// The future's own error, or an I/O error when the task died (a panic inside it).
pub(crate) fn run_io<F, T>(fut: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(Error::io(
            "object store request",
            std::io::Error::other("the request task ended without an answer"),
        ))
    })
}

/// rustls needs one process-wide crypto provider; ring's is the one built in.
fn install_crypto_provider() {
    // Err means one is installed already (ours, or the embedding program's): fine either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Which service a location names, with what the S3 Object Lock code needs to make raw signed requests.
enum Service {
    S3(Box<S3Access>),
    Azure { declared_region: Option<String> },
}

/// What a signed raw S3 request needs (S3 Object Lock calls that `object_store` does not make):
/// sign with [`object_store::aws::AwsAuthorizer`] using `store.credentials()` and `region`, and send to
/// `bucket_url` (path-style `http://host:port/bucket` or virtual-hosted `https://bucket.s3.REGION.amazonaws.com`).
// Read by the S3 Object Lock code; until it lands only the tests read some fields.
#[allow(dead_code)]
pub(crate) struct S3Access {
    /// The builder the store was made from (bucket, region, endpoint, credentials, client and retry
    /// options); clone it to build another client for the same bucket.
    pub builder: AmazonS3Builder,
    /// The store itself; `store.credentials()` yields the credentials to sign with.
    pub store: Arc<AmazonS3>,
    /// The bucket name.
    pub bucket: String,
    /// The key prefix of the repository inside the bucket (no leading or trailing `/`, may be empty).
    pub prefix: String,
    /// The region requests are signed for.
    pub region: String,
    /// The region the user declared with `s3.region` (or the location's AWS host named).
    pub declared_region: Option<String>,
    /// The base URL of the bucket, without a trailing `/`.
    pub bucket_url: String,
    /// The endpoint without the bucket (`None`: AWS itself).
    pub endpoint: Option<String>,
    /// HTTP client options (timeouts, plain-HTTP permission).
    pub client_options: ClientOptions,
}

/// A repository in an S3 bucket or an Azure Blob container.
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    location: String,
    /// The bucket or container, for messages.
    container: String,
    service: Service,
    connections: usize,
    /// Whether create-only writes are atomic (a conditional put); false after the store refused one.
    conditional_put: AtomicBool,
    /// S3 Object Lock and versions (see [`super::s3lock`]); `None` for Azure.
    lock: Option<super::s3lock::S3ObjectLock>,
}

impl fmt::Debug for ObjectBackend {
    // Not derived: the builders hold secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBackend")
            .field("location", &self.location)
            .finish()
    }
}

fn bool_opt(opts: &BackendOptions, key: &str) -> Result<Option<bool>> {
    opts.get(key)
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(Error::InvalidInput(format!(
                "backend option {key}={v:?}: expected true or false"
            ))),
        })
        .transpose()
}

fn num_opt(opts: &BackendOptions, key: &str) -> Result<Option<u64>> {
    opts.get(key)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                Error::InvalidInput(format!(
                    "backend option {key}={v:?}: expected a whole number"
                ))
            })
        })
        .transpose()
}

/// Refuses option keys this backend does not know, naming the key.
fn check_keys(opts: &BackendOptions, scheme: &str, known: &[&str]) -> Result<()> {
    for k in opts.values.keys() {
        if !known.contains(&k.as_str()) {
            let hint = if k.starts_with(&format!("{scheme}.")) {
                format!("the {scheme} backend knows {}", known.join(", "))
            } else {
                format!("it does not apply to an {scheme}: repository")
            };
            return Err(Error::InvalidInput(format!(
                "unknown backend option {k:?}: {hint}"
            )));
        }
    }
    Ok(())
}

fn retry_and_client(
    opts: &BackendOptions,
    scheme: &str,
    allow_http: bool,
) -> Result<(RetryConfig, ClientOptions, usize)> {
    let retries = num_opt(opts, &format!("{scheme}.retries"))?.unwrap_or(10);
    let timeout = num_opt(opts, &format!("{scheme}.timeout"))?.unwrap_or(120);
    let retry_timeout = num_opt(opts, &format!("{scheme}.retry-timeout"))?.unwrap_or(300);
    let connections = num_opt(opts, &format!("{scheme}.connections"))?
        .unwrap_or(DEFAULT_CONNECTIONS as u64)
        .clamp(1, 256) as usize;
    let retry = RetryConfig {
        // Exponential backoff from 100 ms up to 15 s; object_store adds full jitter to each wait.
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: retries as usize,
        retry_timeout: Duration::from_secs(retry_timeout.max(1)),
    };
    let client = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(timeout.max(1)))
        .with_pool_max_idle_per_host(connections);
    Ok((retry, client, connections))
}

/// `s3:...` split into endpoint, bucket and prefix.
#[derive(Debug, PartialEq, Eq)]
struct S3Location {
    /// `scheme://host[:port]`, or `None` for AWS itself.
    endpoint: Option<String>,
    /// A region named by an AWS host (`s3.eu-west-1.amazonaws.com`).
    host_region: Option<String>,
    bucket: String,
    prefix: String,
}

fn is_aws_host(host: &str) -> bool {
    let h = host.split(':').next().unwrap_or(host);
    h == "s3.amazonaws.com" || (h.starts_with("s3.") && h.ends_with(".amazonaws.com"))
}

fn aws_host_region(host: &str) -> Option<String> {
    let h = host.split(':').next().unwrap_or(host);
    let mid = h.strip_prefix("s3.")?.strip_suffix(".amazonaws.com")?;
    let mid = mid.strip_prefix("dualstack.").unwrap_or(mid);
    (!mid.is_empty() && !mid.contains('.')).then(|| mid.to_string())
}

fn split_bucket(location: &str, rest: &str) -> Result<(String, String)> {
    let rest = rest.trim_matches('/');
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::InvalidInput(format!(
            "repository location {location:?} names no bucket (write s3:https://HOST/BUCKET/PREFIX or s3:BUCKET/PREFIX)"
        )));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

fn parse_s3(location: &str, rest: &str) -> Result<S3Location> {
    for scheme in ["https://", "http://"] {
        if let Some(after) = rest.strip_prefix(scheme) {
            let (host, path) = after.split_once('/').unwrap_or((after, ""));
            if host.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "repository location {location:?} names no host"
                )));
            }
            let (bucket, prefix) = split_bucket(location, path)?;
            return Ok(if is_aws_host(host) {
                S3Location {
                    endpoint: None,
                    host_region: aws_host_region(host),
                    bucket,
                    prefix,
                }
            } else {
                S3Location {
                    endpoint: Some(format!("{scheme}{host}")),
                    host_region: None,
                    bucket,
                    prefix,
                }
            });
        }
    }
    // No scheme: `s3.amazonaws.com/bucket/prefix`, `host:port/bucket/prefix` (https), or `bucket/prefix`.
    let first = rest.split('/').next().unwrap_or("");
    if is_aws_host(first) {
        let (bucket, prefix) = split_bucket(location, &rest[first.len()..])?;
        return Ok(S3Location {
            endpoint: None,
            host_region: aws_host_region(first),
            bucket,
            prefix,
        });
    }
    if first.contains(':') {
        let (bucket, prefix) = split_bucket(location, &rest[first.len()..])?;
        return Ok(S3Location {
            endpoint: Some(format!("https://{first}")),
            host_region: None,
            bucket,
            prefix,
        });
    }
    let (bucket, prefix) = split_bucket(location, rest)?;
    Ok(S3Location {
        endpoint: None,
        host_region: None,
        bucket,
        prefix,
    })
}

/// `azure:container/prefix` or restic's `azure:container:/prefix`.
fn parse_azure(location: &str, rest: &str) -> Result<(String, String)> {
    let (container, prefix) = match rest.split_once(':') {
        Some((c, p)) => (c, p),
        None => rest.split_once('/').unwrap_or((rest, "")),
    };
    let container = container.trim_matches('/');
    if container.is_empty() || container.contains('/') {
        return Err(Error::InvalidInput(format!(
            "repository location {location:?} names no container (write azure:CONTAINER/PREFIX)"
        )));
    }
    Ok((container.to_string(), prefix.trim_matches('/').to_string()))
}

fn env_any(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

impl ObjectBackend {
    /// Opens `s3:...` or `azure:...` with its options. Building the client makes no request, except
    /// for an AWS bucket whose region is given nowhere (one HEAD of the bucket to find it).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed location, an unknown option key or a bad option value,
    /// or missing credentials the store cannot work without.
    pub fn open(location: &str, opts: &BackendOptions) -> Result<Self> {
        install_crypto_provider();
        if let Some(rest) = location.strip_prefix("s3:") {
            check_keys(opts, "s3", S3_OPTIONS)?;
            Self::open_s3(location, rest, opts)
        } else if let Some(rest) = location.strip_prefix("azure:") {
            check_keys(opts, "azure", AZURE_OPTIONS)?;
            Self::open_azure(location, rest, opts)
        } else {
            Err(Error::InvalidInput(format!(
                "repository location {location:?} is neither s3: nor azure:"
            )))
        }
    }

    fn open_s3(location: &str, rest: &str, opts: &BackendOptions) -> Result<Self> {
        let mut loc = parse_s3(location, rest)?;
        if let Some(e) = opts.get("s3.endpoint") {
            let e = e.trim_end_matches('/');
            loc.endpoint = if e.contains("://") {
                Some(e.to_string())
            } else {
                Some(format!("https://{e}"))
            };
        }
        let env_endpoint = env_any(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]);
        let endpoint = loc.endpoint.clone().or(env_endpoint);
        let declared_region = opts
            .get("s3.region")
            .map(str::to_string)
            .or(loc.host_region.clone());
        let env_region = env_any(&["AWS_REGION", "AWS_DEFAULT_REGION"]);
        let profile = match super::awsprofile::wanted(opts.get("s3.profile")) {
            Some(p) => Some(run_io(super::awsprofile::load(p, location.to_string()))?),
            None => None,
        };
        let env_region = env_region.or_else(|| profile.as_ref().and_then(|p| p.region.clone()));
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
            || env_any(&["AWS_ALLOW_HTTP"]).is_some_and(|v| v == "true");
        let (retry, client_options, connections) = retry_and_client(opts, "s3", allow_http)?;

        let mut path_style = bool_opt(opts, "s3.path-style")?;
        if let Some(l) = opts.get("s3.bucket-lookup") {
            path_style = Some(match l {
                "path" => true,
                "dns" => false,
                "auto" => endpoint.is_some(),
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "backend option s3.bucket-lookup={l:?}: expected auto, dns or path"
                    )))
                }
            });
        }
        // Path-style for an explicit host other than AWS (MinIO, Ceph, moto), virtual-hosted for AWS.
        let path_style = path_style.unwrap_or(endpoint.is_some());
        let conditional = bool_opt(opts, "s3.conditional-put")?.unwrap_or(true);

        let region = match (&declared_region, &env_region, &endpoint) {
            (Some(r), _, _) => r.clone(),
            (None, Some(r), _) => r.clone(),
            (None, None, Some(_)) => "us-east-1".to_string(),
            (None, None, None) => {
                // AWS without a region anywhere: ask the bucket where it lives.
                let bucket = loc.bucket.clone();
                let co = client_options.clone();
                let location = location.to_string();
                run_io(async move {
                    object_store::aws::resolve_bucket_region(&bucket, &co)
                        .await
                        .map_err(|e| {
                            Error::InvalidInput(format!(
                                "{location}: cannot find the region of bucket {bucket:?} ({e}); give it with -o s3.region=REGION or AWS_REGION"
                            ))
                        })
                })?
            }
        };

        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&loc.bucket)
            .with_region(&region)
            .with_virtual_hosted_style_request(!path_style)
            .with_retry(retry)
            .with_client_options(client_options.clone())
            .with_conditional_put(if conditional {
                S3ConditionalPut::ETagMatch
            } else {
                S3ConditionalPut::Disabled
            });
        if let Some(p) = &profile {
            builder = builder.with_credentials(p.credentials.clone());
        }
        if let Some(u) = bool_opt(opts, "s3.unsigned-payload")? {
            builder = builder.with_unsigned_payload(u);
        }
        let bucket_url = match (&endpoint, path_style) {
            (Some(e), true) => format!("{}/{}", e.trim_end_matches('/'), loc.bucket),
            (Some(e), false) => {
                // Virtual-hosted on a custom endpoint: the bucket is the first label of the host.
                let (scheme, host) = e.split_once("://").unwrap_or(("https", e));
                format!("{scheme}://{}.{}", loc.bucket, host.trim_end_matches('/'))
            }
            (None, true) => format!("https://s3.{region}.amazonaws.com/{}", loc.bucket),
            (None, false) => format!("https://{}.s3.{region}.amazonaws.com", loc.bucket),
        };
        if let Some(e) = &endpoint {
            // object_store takes the endpoint as the bucket URL when virtual-hosted.
            builder = builder.with_endpoint(if path_style {
                e.clone()
            } else {
                bucket_url.clone()
            });
        }
        let store = Arc::new(builder.clone().build().map_err(|e| {
            Error::InvalidInput(format!(
                "{location}: cannot set up the S3 client: {e} (credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, an AWS profile, a web identity, or the instance metadata service)"
            ))
        })?);
        let limited: Arc<dyn ObjectStore> =
            Arc::new(LimitStore::new(Arc::clone(&store), connections));
        let lock = super::s3lock::S3ObjectLock::open(
            &loc.bucket,
            &bucket_url,
            &region,
            Arc::clone(store.credentials()),
            opts.get("s3.object-lock"),
            location,
        )?;
        Ok(Self {
            lock: Some(lock),
            store: limited,
            prefix: loc.prefix.clone(),
            location: location.to_string(),
            container: format!("bucket {:?}", loc.bucket),
            service: Service::S3(Box::new(S3Access {
                builder,
                store,
                bucket: loc.bucket,
                prefix: loc.prefix,
                region,
                declared_region,
                bucket_url,
                endpoint,
                client_options,
            })),
            connections,
            conditional_put: AtomicBool::new(conditional),
        })
    }

    fn open_azure(location: &str, rest: &str, opts: &BackendOptions) -> Result<Self> {
        let (container, prefix) = parse_azure(location, rest)?;
        let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(&container);
        let account = opts
            .get("azure.account-name")
            .map(str::to_string)
            .or_else(|| env_any(&["AZURE_STORAGE_ACCOUNT_NAME", "AZURE_ACCOUNT_NAME"]));
        if let Some(a) = &account {
            builder = builder.with_account(a);
        }
        if let Some(k) = opts
            .get("azure.account-key")
            .map(str::to_string)
            .or_else(|| env_any(&["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_ACCOUNT_KEY"]))
        {
            builder = builder.with_access_key(k);
        }
        if let Some(s) = opts.get("azure.sas-token").map(str::to_string).or_else(|| {
            env_any(&[
                "AZURE_STORAGE_SAS_TOKEN",
                "AZURE_STORAGE_SAS_KEY",
                "AZURE_ACCOUNT_SAS",
            ])
        }) {
            let pairs = object_store::azure::split_sas(s.trim_start_matches('?')).map_err(|e| {
                Error::InvalidInput(format!("{location}: the SAS token cannot be read: {e}"))
            })?;
            builder = builder.with_sas_authorization(pairs);
        }
        let endpoint = match (
            opts.get("azure.endpoint"),
            opts.get("azure.endpoint-suffix"),
        ) {
            (Some(e), _) => Some(e.trim_end_matches('/').to_string()),
            (None, Some(suffix)) => {
                let Some(a) = &account else {
                    return Err(Error::InvalidInput(format!(
                        "{location}: azure.endpoint-suffix needs the account name (-o azure.account-name=NAME or AZURE_ACCOUNT_NAME)"
                    )));
                };
                Some(format!("https://{a}.blob.{}", suffix.trim_matches('.')))
            }
            (None, None) => env_any(&["AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT"]),
        };
        if account.is_none() && endpoint.is_none() {
            return Err(Error::InvalidInput(format!(
                "{location}: no Azure storage account given: set AZURE_STORAGE_ACCOUNT_NAME (or AZURE_ACCOUNT_NAME) or -o azure.account-name=NAME"
            )));
        }
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e.clone());
            if account.is_none() {
                // Azurite's URL names the account as its first path segment.
                if let Some(a) = e.split("://").nth(1).and_then(|r| r.split('/').nth(1)) {
                    builder = builder.with_account(a);
                }
            }
        }
        let (retry, client_options, connections) = retry_and_client(opts, "azure", allow_http)?;
        let builder = builder
            .with_retry(retry)
            .with_client_options(client_options);
        let store = builder.build().map_err(|e| {
            Error::InvalidInput(format!(
                "{location}: cannot set up the Azure client: {e} (give an account key with AZURE_STORAGE_ACCOUNT_KEY, a SAS token with AZURE_STORAGE_SAS_TOKEN, or use a managed identity)"
            ))
        })?;
        let limited: Arc<dyn ObjectStore> = Arc::new(LimitStore::new(store, connections));
        Ok(Self {
            lock: None,
            store: limited,
            prefix,
            location: location.to_string(),
            container: format!("container {container:?}"),
            service: Service::Azure {
                declared_region: opts.get("azure.region").map(str::to_string),
            },
            connections,
            // Azure's `If-None-Match: *` on Put Blob is atomic.
            conditional_put: AtomicBool::new(true),
        })
    }

    /// What signed raw S3 requests need (S3 Object Lock); `None` for Azure.
    #[allow(dead_code)]
    pub(crate) fn s3_access(&self) -> Option<&S3Access> {
        match &self.service {
            Service::S3(a) => Some(a),
            Service::Azure { .. } => None,
        }
    }

    /// The full key of object `name` of type `t` in the bucket or container.
    pub(crate) fn key(&self, t: FileType, name: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(t.path_of(name))
        } else {
            ObjPath::from(format!("{}/{}", self.prefix, t.path_of(name)))
        }
    }

    fn dir(&self, t: FileType) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(t.dir())
        } else {
            ObjPath::from(format!("{}/{}", self.prefix, t.dir()))
        }
    }

    fn ctx(&self, t: FileType, name: &str) -> Ctx {
        Ctx {
            location: self.location.clone(),
            container: self.container.clone(),
            t,
            name: name.to_string(),
        }
    }
}

/// What an error message needs to name the object; moved into each request's task.
#[derive(Clone)]
struct Ctx {
    location: String,
    container: String,
    t: FileType,
    name: String,
}

impl Ctx {
    fn object(&self) -> String {
        self.t.path_of(&self.name)
    }

    fn map(&self, op: &str, e: object_store::Error) -> Error {
        use object_store::Error as E;
        let text = e.to_string();
        match e {
            // A listing reports a missing bucket as a generic error with the 404 body.
            _ if missing_container(&text) => Error::NoRepository {
                location: self.location.clone(),
                reason: format!(
                    "the {} does not exist: create it first ({})",
                    self.container,
                    if self.location.starts_with("s3:") {
                        "for example `aws s3 mb s3://BUCKET`"
                    } else {
                        "for example `az storage container create --name CONTAINER`"
                    }
                ),
            },
            E::NotFound { .. } => not_found(self.t, &self.name),
            E::AlreadyExists { .. } | E::Precondition { .. } => Error::AlreadyExists {
                file_type: self.t,
                name: self.name.clone(),
            },
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => Error::AccessDenied {
                location: self.location.clone(),
                detail: format!("{op} {}: {text}", self.object()),
            },
            _ if text.contains("403 Forbidden") || text.contains("401 Unauthorized") => {
                Error::AccessDenied {
                    location: self.location.clone(),
                    detail: format!("{op} {}: {text}", self.object()),
                }
            }
            _ => Error::io(
                format!("{op} {} in {}", self.object(), self.location),
                std::io::Error::other(text),
            ),
        }
    }
}

/// How many times a create-only PUT is sent again after a transport error.
const CREATE_RETRIES: u32 = 5;

/// Whether a request failed in transport (reset, timeout, cut-off body) rather than with an answer.
fn is_transport_error(e: &object_store::Error) -> bool {
    if !matches!(e, object_store::Error::Generic { .. }) {
        return false;
    }
    let text = e.to_string();
    !text.contains("Server returned")
}

/// Exponential backoff with full jitter: up to 200 ms, 400 ms, ... 6.4 s.
fn backoff(attempt: u32) -> Duration {
    let cap = 100u64 << attempt.min(6);
    Duration::from_millis(rand::random::<u64>() % cap.max(1) + 1)
}

/// Whether `stored` holds exactly the bytes of `payload`.
fn same_bytes(payload: &PutPayload, stored: &[u8]) -> bool {
    payload.content_length() == stored.len()
        && payload.iter().flat_map(|b| b.iter()).eq(stored.iter())
}

fn missing_container(text: &str) -> bool {
    text.contains("NoSuchBucket") || text.contains("ContainerNotFound")
}

/// Reads a whole object.
async fn get_all(store: Arc<dyn ObjectStore>, key: ObjPath, ctx: Ctx) -> Result<Vec<u8>> {
    // The client resumes a body cut short when it can; when it cannot (it gave up, or the store sent
    // no ETag to resume against), the whole read is repeated: reading twice is harmless.
    let mut attempt = 0u32;
    let (want, b) = loop {
        let got = match store.get_opts(&key, GetOptions::default()).await {
            Ok(r) => {
                let want = r.meta.size;
                r.bytes().await.map(|b| (want, b))
            }
            Err(e) => Err(e),
        };
        match got {
            Ok(x) => break x,
            Err(e) if attempt < CREATE_RETRIES && is_transport_error(&e) => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(ctx.map("reading", e)),
        }
    };
    if b.len() as u64 != want {
        return Err(Error::integrity(
            ctx.object(),
            format!("the store sent {} bytes of {want}", b.len()),
        ));
    }
    Ok(b.to_vec())
}

/// An error for a range that ends past the object, when the object is shorter; otherwise `e`.
async fn range_error(
    store: &Arc<dyn ObjectStore>,
    key: &ObjPath,
    ctx: &Ctx,
    end: u64,
    e: Error,
) -> Error {
    match store.head(key).await {
        Ok(m) if m.size < end => Error::integrity(
            ctx.object(),
            format!(
                "truncated: the object has {} bytes, wanted up to {end}",
                m.size
            ),
        ),
        Err(object_store::Error::NotFound { .. }) => not_found(ctx.t, &ctx.name),
        _ => e,
    }
}

impl Backend for ObjectBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create(&self) -> Result<()> {
        let store = Arc::clone(&self.store);
        let ctx = self.ctx(FileType::Config, "");
        let dir = if self.prefix.is_empty() {
            None
        } else {
            Some(ObjPath::from(self.prefix.as_str()))
        };
        let config = self.key(FileType::Config, "");
        run_io(async move {
            // A listing tells a missing bucket (404 with a body) from an empty one; a HEAD cannot.
            // A listing cut short on the way is repeated, as in `list`.
            let mut attempt = 0u32;
            let listed = loop {
                match store.list_with_delimiter(dir.as_ref()).await {
                    Err(e) if attempt < CREATE_RETRIES && is_transport_error(&e) => {
                        attempt += 1;
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    r => break r,
                }
            };
            if let Err(e) = listed {
                return Err(match ctx.map("listing", e) {
                    Error::NoRepository { location, reason } => Error::InvalidInput(format!(
                        "cannot create a repository at {location}: {reason}"
                    )),
                    Error::NotFound { .. } => Error::InvalidInput(format!(
                        "cannot create a repository at {}: the {} does not exist: create it first",
                        ctx.location, ctx.container
                    )),
                    other => other,
                });
            }
            match store.head(&config).await {
                Ok(_) => Err(Error::AlreadyExists {
                    file_type: FileType::Config,
                    name: ctx.location.clone(),
                }),
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(ctx.map("checking", e)),
            }
        })
    }

    fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        if t == FileType::Config {
            return match self.stat(t, "") {
                Ok(n) => Ok(vec![(String::new(), n)]),
                Err(Error::NotFound { .. }) => Ok(vec![]),
                Err(e) => Err(e),
            };
        }
        let store = Arc::clone(&self.store);
        let dir = self.dir(t);
        let ctx = self.ctx(t, "");
        // data/<2 hex>/<name>: one level deeper than the other folders.
        let depth = dir.parts().count() + if t == FileType::Pack { 2 } else { 1 };
        run_io(async move {
            // object_store's list follows continuation tokens: every page, 1000 keys at a time on S3.
            // It retries a failed request but not a page body cut short on the way: the whole listing
            // is repeated then (it changes nothing, so repeating is safe).
            let mut attempt = 0u32;
            let metas: Vec<object_store::ObjectMeta> = loop {
                match store.list(Some(&dir)).try_collect().await {
                    Ok(m) => break m,
                    Err(e) if attempt < CREATE_RETRIES && is_transport_error(&e) => {
                        attempt += 1;
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    Err(e) => return Err(ctx.map("listing", e)),
                }
            };
            Ok(metas
                .into_iter()
                .filter(|m| m.location.parts().count() == depth)
                .filter_map(|m| {
                    let name = m.location.filename()?.to_string();
                    (!name.starts_with('.')).then_some((name, m.size))
                })
                .collect())
        })
    }

    fn read(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        let store = Arc::clone(&self.store);
        let key = self.key(t, name);
        let ctx = self.ctx(t, name);
        run_io(get_all(store, key, ctx))
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut v = self.read_ranges(t, name, &[(offset, len)])?;
        Ok(v.pop().unwrap_or_default())
    }

    fn read_ranges(&self, t: FileType, name: &str, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        let store = Arc::clone(&self.store);
        let key = self.key(t, name);
        let ctx = self.ctx(t, name);
        let ranges: Vec<(u64, u64)> = ranges.to_vec();
        run_io(async move {
            let end = ranges.iter().map(|&(o, l)| o + l).max().unwrap_or(0);
            let wanted: Vec<std::ops::Range<u64>> = ranges
                .iter()
                .filter(|&&(_, l)| l > 0)
                .map(|&(o, l)| o..o + l)
                .collect();
            let got = if wanted.is_empty() {
                // Only empty ranges: the object must exist and be long enough.
                let m = store.head(&key).await.map_err(|e| ctx.map("reading", e))?;
                if m.size < end {
                    return Err(Error::integrity(
                        ctx.object(),
                        format!(
                            "truncated: the object has {} bytes, wanted up to {end}",
                            m.size
                        ),
                    ));
                }
                Vec::new()
            } else if wanted.len() == 1 {
                let r = &wanted[0];
                let opts = GetOptions {
                    range: Some(GetRange::Bounded(r.clone())),
                    ..GetOptions::default()
                };
                // A body cut short that the client could not resume is read again, as in `get_all`.
                let mut attempt = 0u32;
                let res = loop {
                    let res = match store.get_opts(&key, opts.clone()).await {
                        Ok(res) => res.bytes().await,
                        Err(e) => Err(e),
                    };
                    match res {
                        Err(e) if attempt < CREATE_RETRIES && is_transport_error(&e) => {
                            attempt += 1;
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                        r => break r,
                    }
                };
                match res {
                    Ok(b) => vec![b],
                    Err(e) => {
                        let e = ctx.map("reading", e);
                        return Err(range_error(&store, &key, &ctx, end, e).await);
                    }
                }
            } else {
                let mut attempt = 0u32;
                let res = loop {
                    match store.get_ranges(&key, &wanted).await {
                        Err(e) if attempt < CREATE_RETRIES && is_transport_error(&e) => {
                            attempt += 1;
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                        r => break r,
                    }
                };
                match res {
                    Ok(v) => v,
                    Err(e) => {
                        let e = ctx.map("reading", e);
                        return Err(range_error(&store, &key, &ctx, end, e).await);
                    }
                }
            };
            let mut got = got.into_iter();
            let mut out = Vec::with_capacity(ranges.len());
            for &(offset, len) in &ranges {
                if len == 0 {
                    out.push(Vec::new());
                    continue;
                }
                let b = got.next().unwrap_or_default();
                if b.len() as u64 != len {
                    // A short answer is never passed on as data.
                    return Err(Error::integrity(
                        ctx.object(),
                        format!(
                            "truncated: wanted {len} bytes at offset {offset}, got {}",
                            b.len()
                        ),
                    ));
                }
                out.push(b.to_vec());
            }
            Ok(out)
        })
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.write_owned(t, name, data.to_vec()).map(drop)
    }

    fn write_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let store = Arc::clone(&self.store);
        let key = self.key(t, name);
        let ctx = self.ctx(t, name);
        // The request task owns the bytes (the PUT and any retry share them).
        let payload = PutPayload::from(data);
        let conditional = self.conditional_put.load(Ordering::Relaxed);
        let (result, fell_back) = run_io(async move {
            if conditional {
                // object_store does not retry a create-only PUT after a transport error (it is not
                // idempotent to it); for us it is, since a name only ever holds one content. So a
                // reset or timeout is retried here, and an "already exists" after any retry is
                // checked against what we meant to write: our own earlier attempt landed.
                let mut attempt = 0u32;
                loop {
                    let opts = PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    };
                    match store.put_opts(&key, payload.clone(), opts).await {
                        Ok(_) => return Ok((Ok(()), false)),
                        Err(
                            e @ (object_store::Error::AlreadyExists { .. }
                            | object_store::Error::Precondition { .. }),
                        ) => {
                            let retried = attempt > 0 || e.to_string().contains(" retries");
                            let same = retried
                                && matches!(
                                    get_all(Arc::clone(&store), key.clone(), ctx.clone()).await,
                                    Ok(stored) if same_bytes(&payload, &stored)
                                );
                            return Ok((
                                if same {
                                    Ok(())
                                } else {
                                    Err(Error::AlreadyExists {
                                        file_type: ctx.t,
                                        name: ctx.name.clone(),
                                    })
                                },
                                false,
                            ));
                        }
                        Err(object_store::Error::NotImplemented { .. }) => break,
                        Err(e) if attempt < CREATE_RETRIES && is_transport_error(&e) => {
                            attempt += 1;
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                        Err(e) => return Ok((Err(ctx.map("writing", e)), false)),
                    }
                }
            }
            // No conditional put: check, then write (not atomic against a racing writer of the same
            // name, which random and content-derived names make unlikely).
            match store.head(&key).await {
                Ok(_) => {
                    return Ok((
                        Err(Error::AlreadyExists {
                            file_type: ctx.t,
                            name: ctx.name.clone(),
                        }),
                        conditional,
                    ))
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Ok((Err(ctx.map("checking", e)), conditional)),
            }
            let r = store
                .put_opts(&key, payload, PutOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| ctx.map("writing", e));
            Ok((r, conditional))
        })?;
        if fell_back {
            tracing::warn!(
                "{}: the store does not support conditional writes; falling back to check-then-write",
                self.location
            );
            self.conditional_put.store(false, Ordering::Relaxed);
        }
        result?;
        if let Some(l) = &self.lock {
            l.after_write(t, name, self.key(t, name).to_string())?;
        }
        super::crash_point(t);
        Ok(None)
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        if let Some(r) = self
            .lock
            .as_ref()
            .and_then(|l| l.remove(t, name, self.key(t, name).to_string()))
        {
            r?;
            super::crash_point(t);
            return Ok(());
        }
        let store = Arc::clone(&self.store);
        let key = self.key(t, name);
        let ctx = self.ctx(t, name);
        run_io(async move {
            // S3 answers a DELETE of a missing key with success: ask first, so that a caller learns
            // the object was already gone, as on a local disk.
            store.head(&key).await.map_err(|e| ctx.map("removing", e))?;
            // Deletes go out as bulk-delete POSTs, which object_store does not repeat after a reset
            // or a cut answer; deleting twice is harmless, so they are repeated here.
            let mut attempt = 0u32;
            loop {
                match store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => return Ok(()),
                    Err(e) if attempt < CREATE_RETRIES && is_transport_error(&e) => {
                        attempt += 1;
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    Err(e) => return Err(ctx.map("removing", e)),
                }
            }
        })?;
        super::crash_point(t);
        Ok(())
    }

    fn stat(&self, t: FileType, name: &str) -> Result<u64> {
        let store = Arc::clone(&self.store);
        let key = self.key(t, name);
        let ctx = self.ctx(t, name);
        run_io(async move {
            store
                .head(&key)
                .await
                .map(|m| m.size)
                .map_err(|e| ctx.map("checking", e))
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // A PUT has returned only once the store holds the object durably.
            durable_writes: true,
            atomic_create: self.conditional_put.load(Ordering::Relaxed),
            concurrency: self.connections,
            object_lock: self.lock.as_ref().is_some_and(|l| l.active()),
        }
    }

    fn locked_until(
        &self,
        t: FileType,
        name: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        match &self.lock {
            Some(l) => l.locked_until(t, name, self.key(t, name).to_string()),
            None => Ok(None),
        }
    }

    fn region(&self) -> Result<Option<String>> {
        match &self.service {
            Service::Azure { declared_region } => Ok(declared_region.clone()),
            Service::S3(a) => {
                if let Some(r) = &a.declared_region {
                    return Ok(Some(r.clone()));
                }
                bucket_region(a)
            }
        }
    }
}

/// The region S3 says the bucket is in: the `x-amz-bucket-region` header of a HEAD of the bucket,
/// which AWS sends even to an unsigned request it refuses; `None` when the store does not say.
fn bucket_region(a: &S3Access) -> Result<Option<String>> {
    let url = a.bucket_url.clone();
    let bucket = a.bucket.clone();
    let co = a.client_options.clone();
    let aws = a.endpoint.is_none();
    run_io(async move {
        if aws {
            return object_store::aws::resolve_bucket_region(&bucket, &co)
                .await
                .map(Some)
                .map_err(|e| {
                    Error::io(
                        format!("finding the region of bucket {bucket:?}"),
                        std::io::Error::other(e.to_string()),
                    )
                });
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::io("building an HTTP client", std::io::Error::other(e)))?;
        let resp = client.head(&url).send().await.map_err(|e| {
            Error::io(
                format!("finding the region of bucket {bucket:?} at {url}"),
                std::io::Error::other(e),
            )
        })?;
        Ok(resp
            .headers()
            .get("x-amz-bucket-region")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[&str]) -> BackendOptions {
        BackendOptions::parse(&kv.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn s3_locations() {
        let l = parse_s3("", "https://minio.example:9000/bucket/a/b").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("https://minio.example:9000"));
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bucket", "a/b"));
        let l = parse_s3("", "http://127.0.0.1:5000/b").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b", ""));
        let l = parse_s3("", "s3.amazonaws.com/bucket/p").unwrap();
        assert_eq!(l.endpoint, None);
        assert_eq!(l.host_region, None);
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bucket", "p"));
        let l = parse_s3("", "https://s3.eu-west-1.amazonaws.com/bucket").unwrap();
        assert_eq!(l.endpoint, None);
        assert_eq!(l.host_region.as_deref(), Some("eu-west-1"));
        let l = parse_s3("", "my.bucket/deep/prefix/").unwrap();
        assert_eq!(l.endpoint, None);
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("my.bucket", "deep/prefix")
        );
        let l = parse_s3("", "localhost:9000/b/p").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("https://localhost:9000"));
        assert!(parse_s3("", "https://host/").is_err());
        assert!(parse_s3("", "").is_err());
    }

    #[test]
    fn azure_locations() {
        assert_eq!(
            parse_azure("", "c/p/q").unwrap(),
            ("c".to_string(), "p/q".to_string())
        );
        assert_eq!(
            parse_azure("", "c:/p").unwrap(),
            ("c".to_string(), "p".to_string())
        );
        assert_eq!(
            parse_azure("", "c").unwrap(),
            ("c".to_string(), String::new())
        );
        assert!(parse_azure("", "").is_err());
    }

    #[test]
    fn unknown_options_are_refused_by_name() {
        let e = ObjectBackend::open("s3:http://127.0.0.1:1/b", &opts(&["s3.regoin=x"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s3.regoin"), "{e}");
        let e = ObjectBackend::open("s3:http://127.0.0.1:1/b", &opts(&["azure.region=x"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("azure.region") && e.contains("s3:"), "{e}");
        let e = ObjectBackend::open(
            "azure:c/p",
            &opts(&["azure.account-name=a", "azure.connections=many"]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("azure.connections"), "{e}");
    }

    #[test]
    fn keys_follow_the_local_layout_under_the_prefix() {
        let b = ObjectBackend::open(
            "s3:http://127.0.0.1:1/bucket/some/prefix",
            &opts(&["s3.region=eu-west-1"]),
        )
        .unwrap();
        let name = "ab".repeat(32);
        assert_eq!(
            b.key(FileType::Pack, &name).as_ref(),
            format!("some/prefix/data/ab/{name}")
        );
        assert_eq!(b.key(FileType::Config, "").as_ref(), "some/prefix/config");
        assert_eq!(b.region().unwrap().as_deref(), Some("eu-west-1"));
        let a = b.s3_access().expect("an S3 backend");
        assert_eq!(a.bucket_url, "http://127.0.0.1:1/bucket");
        assert_eq!(a.prefix, "some/prefix");
        assert_eq!(b.capabilities().concurrency, DEFAULT_CONNECTIONS);
    }

    #[test]
    fn runs_from_inside_another_tokio_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let v = rt.block_on(async { run_io(async { Ok(41 + 1) }) }).unwrap();
        assert_eq!(v, 42);
    }
}
